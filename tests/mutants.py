"""Plant small bugs in the modules that hold the rules, one at a time, and see the tests fail.

Each mutant is a plausible bug in one rule (the version claim, pruning and its floor, key
coercion, the decoding of N, the processor's checkpoint order, snapshot versions, verify's
comparison, poison isolation): one or more exact text replacements in ``src/``, and the
tests that must catch it. For each, the files are changed, the tests run (derandomized, as in
CI: ``CI=1``; stopping at the first failure), and the files restored, always: on success,
failure, Ctrl-C or SIGTERM; a run killed harder leaves copies in ``.mutants/`` that the next
run puts back first. A mutant the tests do not catch is a *survivor*: a rule no test holds.

    .venv/bin/python tests/mutants.py                # every mutant (~10 minutes)
    .venv/bin/python tests/mutants.py --tier unit    # no services (under a minute)
    .venv/bin/python tests/mutants.py --only prune   # names containing "prune"
    .venv/bin/python tests/mutants.py --list

Exit status: 0 every mutant caught, 1 survivors, 2 a mutant's text is not in its file (the
code moved: update the mutant), its tests fail without it, or the run was interrupted.
Tiers: ``unit`` needs nothing, ``db`` a PostgreSQL (``DATABASE_URL``, else one is started
for the whole run), ``stack`` the local stack too (moto, kinesis-local: started by the tests).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
BACKUP = ROOT / ".mutants"
TIERS = ("unit", "db", "stack")
#: Seconds a mutant's tests may take (a mutant that hangs them counts as caught).
TIMEOUT = 900


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (exactly once in ``path``, relative to src/ddbcdc) with ``new``."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutant:
    name: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]
    tier: str


def mutant(name: str, tests: tuple[str, ...], tier: str, *edits: tuple[str, str, str]) -> Mutant:
    return Mutant(name, tuple(Edit(*e) for e in edits), tests, tier)


# -- the tests each rule is held by ------------------------------------------------------

VERSION_RULE = ("tests/integration/test_version_rule.py",)
PRUNE = ("tests/integration/test_prune.py", "-k", "not 2023 and not any_age")
KEYS = ("tests/unit/test_cleanse_keys.py", "tests/unit/test_cleanse.py")
NUMBERS = ("tests/unit/test_attributes.py", "-k", "number or literal")
PROCESSOR = ("tests/unit/test_processor.py",)
STREAM_TIME = ("tests/integration/test_stream_time.py",)
LIVENESS = ("tests/unit/test_liveness.py",)
NOTHING_LOST = ("tests/integration/test_nothing_lost.py",)
ISOLATION = ("tests/integration/test_materialize_batch.py", "-k", "many_keys")
TIMEOUTS = ("tests/unit/test_pipeline_prepare.py", "-k", "classified")
FENCE = ("tests/integration/test_mapping_fence.py",)
EXPORTS = ("tests/integration/test_export_import.py", "-k", "every_good or replayed")
SNAPSHOT = ("tests/integration/test_snapshot.py", "-k", "request_time")
VERIFY = ("tests/integration/test_verify_columns.py",)
DELETES = ("tests/unit/test_deletes.py",)
DELETE_MODES = ("tests/integration/test_delete_modes.py",)
VERIFY_DELETES = ("tests/integration/test_verify_delete_modes.py",)

W, P, C = "materialize/writer.py", "materialize/prune.py", "cleanse/coerce.py"
S = "materialize/streamtime.py"
_VERSION = """    return sa.tuple_(
        cols._ddbcdc_version_us,
        sa.func.coalesce(cols._ddbcdc_sequence, -1),
        cols._ddbcdc_event_id.collate("C"),
    )"""
_APPLY = """        result = self._apply(records, position)
"""
_CHECKPOINT = """        self._checkpoint(process_records_input.checkpointer, last)

    def lease_lost"""

MUTANTS = [
    # the version claim: a change applies only by finding its key's version older
    mutant(
        "claim: an equal version replaces (< becomes <=)",
        VERSION_RULE,
        "db",
        (
            W,
            "where=_version(ver.c) < _version(insert.excluded)",
            "where=_version(ver.c) <= _version(insert.excluded)",
        ),
    ),
    mutant(
        "claim: versions compared by time alone",
        VERSION_RULE,
        "db",
        (W, _VERSION, "    return sa.tuple_(cols._ddbcdc_version_us)"),
    ),
    mutant(
        "claim: the sequence number left out",
        VERSION_RULE,
        "db",
        (W, "        sa.func.coalesce(cols._ddbcdc_sequence, -1),\n", ""),
    ),
    mutant(
        "claim: no sequence number counts as the greatest",
        VERSION_RULE,
        "db",
        (
            W,
            "sa.func.coalesce(cols._ddbcdc_sequence, -1)",
            "sa.func.coalesce(cols._ddbcdc_sequence, 10**60)",
        ),
    ),
    mutant(
        "claim: event ids in the database's collation, not byte order",
        VERSION_RULE,
        "db",
        (W, 'cols._ddbcdc_event_id.collate("C")', "cols._ddbcdc_event_id"),
        (
            "schema/tables.py",
            'sa.Column("_ddbcdc_event_id", sa.Text(collation="C"), nullable=False)',
            'sa.Column("_ddbcdc_event_id", sa.Text(), nullable=False)',
        ),
    ),
    mutant(
        "collapse: a batch's newest change per key by time alone",
        VERSION_RULE,
        "db",
        (
            "materialize/__init__.py",
            "        held = get(key)\n        if held is None or held.version < change.version:",
            (
                "        held = get(key)\n"
                "        if held is None or held.version[0] < change.version[0]:"
            ),
        ),
    ),
    mutant(
        "claim: a winning REMOVE leaves the live row",
        VERSION_RULE,
        "db",
        (
            W,
            "            if deleted:\n                conn.execute(self._delete)",
            "            if deleted:\n                pass",
        ),
    ),
    # the floor: at or below it, a key without a version cannot be compared
    mutant(
        "floor: a change at the floor is applied",
        PRUNE,
        "db",
        (
            W,
            "admissible = sa.or_(s.c._ddbcdc_version_us > floor",
            "admissible = sa.or_(s.c._ddbcdc_version_us >= floor",
        ),
    ),
    mutant(
        "floor: a change at the floor is neither applied nor refused",
        PRUNE,
        "db",
        (
            W,
            "        s.c._ddbcdc_version_us <= floor,",
            "        s.c._ddbcdc_version_us < floor,",
        ),
    ),
    # pruning: in stream time, below holds and pending dead letters
    mutant(
        "prune: holds ignored",
        PRUNE,
        "db",
        (P, '        candidates.append((int(held), "hold"))', "        pass"),
    ),
    mutant(
        "prune: holds of every table ignored",
        PRUNE,
        "db",
        (
            P,
            "sa.or_(prune_holds.c.target_table == target, prune_holds.c.target_table.is_(None))",
            "prune_holds.c.target_table == target",
        ),
    ),
    mutant(
        "prune: another table's holds hold this one",
        PRUNE,
        "db",
        (
            P,
            "sa.or_(prune_holds.c.target_table == target, prune_holds.c.target_table.is_(None))",
            "sa.true()",
        ),
    ),
    mutant(
        "prune: holding again raises a hold",
        PRUNE,
        "db",
        (P, '"min_version_us": sa.func.least(', '"min_version_us": sa.func.greatest('),
    ),
    mutant(
        "prune: the highest bound decides",
        PRUNE,
        "db",
        (P, "version, why = min(candidates)", "version, why = max(candidates)"),
    ),
    mutant(
        "prune: the tombstone at the cutoff is pruned",
        PRUNE,
        "db",
        (P, "ver.c._ddbcdc_version_us < cutoff_us", "ver.c._ddbcdc_version_us <= cutoff_us"),
    ),
    mutant(
        "prune: pending dead letters ignored",
        PRUNE,
        "db",
        (P, '        candidates.append((int(pending), "dead letter"))', "        pass"),
    ),
    mutant(
        "prune: stream time is the fastest shard's",
        PRUNE,
        "db",
        (
            S,
            "sa.func.min(p.c.max_version_us).filter(open_),",
            "sa.func.max(p.c.max_version_us).filter(open_),",
        ),
    ),
    mutant(
        "prune: ended shards hold stream time back",
        PRUNE,
        "db",
        (S, "open_ = p.c.ended_at.is_(None)", "open_ = sa.true()"),
    ),
    mutant(
        "stream time: a shard that has not started is left out",
        STREAM_TIME,
        "db",
        (
            S,
            "current = listed_at is not None and open_count > 0 and not not_started",
            "current = listed_at is not None and open_count > 0",
        ),
    ),
    mutant(
        "stream time: moves back",
        STREAM_TIME,
        "db",
        (
            S,
            "if store and current and (before is None or int(oldest) > before):",
            "if store and current:",
        ),
        (
            S,
            """                "stream_time_us": sa.func.greatest(
                    stream_time.c.stream_time_us, stmt.excluded.stream_time_us
                ),""",
            """                "stream_time_us": stmt.excluded.stream_time_us,""",
        ),
    ),
    mutant(
        "prune: the horizon ignored",
        PRUNE,
        "db",
        (
            P,
            'candidates = [(stream - horizon // timedelta(microseconds=1), "stream")]',
            'candidates = [(stream, "stream")]',
        ),
    ),
    mutant(
        "floor: moves down",
        PRUNE,
        "db",
        (
            P,
            '"floor_us": sa.func.greatest(prune_state.c.floor_us, stmt.excluded.floor_us)',
            '"floor_us": sa.func.least(prune_state.c.floor_us, stmt.excluded.floor_us)',
        ),
    ),
    mutant(
        "floor: the oldest version pruned, not the newest",
        PRUNE,
        "db",
        (P, "sa.func.max(gone.c._ddbcdc_version_us)", "sa.func.min(gone.c._ddbcdc_version_us)"),
    ),
    # keys map exactly
    mutant(
        'keys: an integer key takes "07"',
        KEYS,
        "unit",
        (
            C,
            '_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")',
            '_CANONICAL_INT = re.compile(r"-?[0-9]+")',
        ),
    ),
    mutant(
        'keys: an integer key takes "-0"',
        KEYS,
        "unit",
        (
            C,
            '_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")',
            '_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")',
        ),
    ),
    mutant(
        'keys: an integer key takes " 7"',
        KEYS,
        "unit",
        (C, "not _CANONICAL_INT.fullmatch(value):", "not _CANONICAL_INT.fullmatch(value.strip()):"),
    ),
    mutant(
        "keys: a numeric key takes an S",
        KEYS,
        "unit",
        (
            C,
            (
                'raise _fail("a string key cannot be a'
                " numeric key exactly: '7' and '7.0' would be one\")"
            ),
            "return _to_numeric(value)",
        ),
    ),
    mutant(
        "keys: an N into a text key as written (7.10 and 7.1 two rows)",
        KEYS,
        "unit",
        (C, 'format(value.normalize(_EXACT), "f")', "str(value)"),
    ),
    mutant(
        "keys: an N into a text key rounded to 28 digits",
        KEYS,
        "unit",
        (C, "value.normalize(_EXACT)", "value.normalize()"),
    ),
    mutant(
        "keys: the compiled row skips an integer key's range",
        KEYS,
        "unit",
        (
            "cleanse/rowfn.py",
            'f"if type({v}) is not int or not LO{i} <= {v} <= HI{i}: {v} = C{i}({v})"',
            'f"if type({v}) is not int: {v} = C{i}({v})"',
        ),
    ),
    # N exactly as DynamoDB takes it
    mutant(
        "numbers: 39 significant digits",
        NUMBERS,
        "unit",
        ("decode/numbers.py", "MAX_DIGITS = 38", "MAX_DIGITS = 39"),
    ),
    mutant(
        "numbers: 1E-131 taken",
        NUMBERS,
        "unit",
        ("decode/numbers.py", "_MIN_ADJUSTED = -130", "_MIN_ADJUSTED = -131"),
    ),
    mutant(
        "numbers: 1E+126 taken",
        NUMBERS,
        "unit",
        ("decode/numbers.py", "_MAX_ADJUSTED = 125", "_MAX_ADJUSTED = 126"),
    ),
    mutant(
        "numbers: trailing zeros count as significant",
        NUMBERS,
        "unit",
        (
            "decode/numbers.py",
            '(whole + (fraction or "")).strip("0")',
            '(whole + (fraction or "")).lstrip("0")',
        ),
    ),
    mutant(
        "numbers: leading zeros count as significant",
        NUMBERS,
        "unit",
        (
            "decode/numbers.py",
            '(whole + (fraction or "")).strip("0")',
            '(whole + (fraction or "")).rstrip("0")',
        ),
    ),
    mutant(
        "numbers: an integer literal of 127 digits taken",
        NUMBERS,
        "unit",
        (
            "decode/numbers.py",
            "if len(whole) > _MAX_ADJUSTED + 1:",
            "if len(whole) > _MAX_ADJUSTED + 2:",
        ),
    ),
    mutant(
        "numbers: the largest number refused",
        NUMBERS,
        "unit",
        (
            "decode/numbers.py",
            "value = Decimal(text)\n    if not _MIN_ADJUSTED <= value.adjusted() <= _MAX_ADJUSTED:",
            "value = Decimal(text)\n    if not _MIN_ADJUSTED <= value.adjusted() < _MAX_ADJUSTED:",
        ),
    ),
    # never checkpoint past an unapplied record
    mutant(
        "processor: checkpoint before the commit",
        PROCESSOR,
        "unit",
        (
            "worker/processor.py",
            _APPLY,
            (
                "        self._checkpoint(process_records_input.checkpointer, last)\n"
                "        result = self._apply(records, position)\n"
            ),
        ),
        ("worker/processor.py", _CHECKPOINT, "\n    def lease_lost"),
    ),
    mutant(
        "processor: a batch PostgreSQL did not commit is skipped",
        PROCESSOR,
        "unit",
        (
            "worker/processor.py",
            (
                "            except DatabaseUnavailableError as exc:\n"
                '                reason, detail = "database", str(exc)'
            ),
            "            except DatabaseUnavailableError:\n                return BatchResult()",
        ),
    ),
    mutant(
        "processor: checkpoints after the lease is lost",
        PROCESSOR,
        "unit",
        (
            "worker/processor.py",
            "        if self.lease_lost_flag:\n            return False\n        for attempt",
            "        for attempt",
        ),
    ),
    # no false alarm: ended, busy and waiting shards are never stalled
    mutant(
        "liveness: a processor that ended leaves no activity",
        LIVENESS,
        "unit",
        (
            "worker/metrics.py",
            'multiprocess_mode="max",  # outlives the process (see the module doc)',
            'multiprocess_mode="livemax",',
        ),
    ),
    mutant(
        "liveness: a processor creating its files fails the probe",
        ("tests/unit/test_worker_metrics.py", "-k", "creating_its_files"),
        "unit",
        ("worker/serving.py", "_HEADER_BYTES = 8", "_HEADER_BYTES = 0"),
    ),
    mutant(
        "liveness: a child waiting for its parents counts as held and ready",
        LIVENESS,
        "unit",
        (
            "worker/liveness.py",
            "waiting = any(p in leases and not leases[p].ended for p in lease.parents)",
            "waiting = False",
        ),
    ),
    mutant(
        "liveness: no heartbeat inside a long call",
        LIVENESS,
        "unit",
        (
            "worker/activity.py",
            "            if self._inside.is_set():\n                self.mark()",
            "            pass",
        ),
    ),
    # nothing lost: every record applied, superseded or dead-lettered
    mutant(
        "poison: decode and cleanse failures dropped",
        NOTHING_LOST,
        "db",
        (
            "pipeline.py",
            "located = sorted(prepared.poison + failed, key=_first)",
            "located = sorted(failed, key=_first)",
        ),
    ),
    mutant(
        "poison: what PostgreSQL refused dropped",
        NOTHING_LOST,
        "db",
        (
            "pipeline.py",
            "located = sorted(prepared.poison + failed, key=_first)",
            "located = sorted(prepared.poison, key=_first)",
        ),
    ),
    mutant(
        "poison: a record the mapping refuses dropped",
        NOTHING_LOST,
        "db",
        (
            "prepare.py",
            (
                "letter = letter_of(stage, str(exc), source, table_name, target, version, exc)\n"
                "            prepared.poison.append((index, letter))"
            ),
            "pass",
        ),
    ),
    mutant(
        "poison: isolation drops the change at fault",
        NOTHING_LOST,
        "db",
        (
            "materialize/isolation.py",
            "                settled.failed.append((change, describe_state(row.state, *fields)))",
            "                pass",
        ),
    ),
    mutant(
        "poison: the isolating function forgets the key it refused",
        ISOLATION,
        "db",
        (
            "materialize/isolate.sql",
            "            upserted := 0;\n            RETURN NEXT;\n            RETURN QUERY",
            "            upserted := 0;\n            RETURN QUERY",
        ),
    ),
    mutant(
        "timeouts: a statement timeout taken for an outage",
        TIMEOUTS,
        "unit",
        ("db.py", '    if state in TIMEOUTS:\n        return "timeout"\n', ""),
    ),
    # two mappings never write one table
    mutant(
        "fence: a batch commits under another mapping",
        FENCE,
        "db",
        ("migrate/versions.py", "        if found != self.digests:\n", "        if False:\n"),
    ),
    mutant(
        "fence: migrate does not wait for the batches in flight",
        FENCE,
        "db",
        (
            "migrate/versions.py",
            "        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))",
            "        pass",
        ),
    ),
    mutant(
        "fence: a shard processor goes on after a migration",
        PROCESSOR,
        "unit",
        (
            "worker/processor.py",
            "                raise Stopped(2) from exc\n",
            "                continue\n",
        ),
    ),
    # backfill rows: every good export file applied, none logged
    mutant(
        "export: a bad data file stops the import",
        EXPORTS,
        "db",
        ("backfill/importer.py", "                    continue\n", "                    raise\n"),
    ),
    mutant(
        "export: a replayed row written to the change log",
        EXPORTS,
        "db",
        (
            "commands/dlq.py",
            "            total.add(unlogged.replay(rows))",
            "            total.add(pipeline.replay(rows))",
        ),
    ),
    # snapshot versions: the page's request time minus the margin
    mutant(
        "snapshot: rows versioned at the time the page came back",
        SNAPSHOT,
        "stack",
        (
            "backfill/snapshot.py",
            "        version, items = read_version_us(page.request_us, job.margin), page.items",
            "        version, items = read_version_us(now_us(), job.margin), page.items",
        ),
    ),
    mutant(
        "snapshot: a page's time taken after its request",
        SNAPSHOT,
        "stack",
        (
            "backfill/scan.py",
            (
                "        started = now_us()\n"
                "        response = call_with_backoff(client.scan, what, stop, **request)\n"
            ),
            (
                "        response = call_with_backoff(client.scan, what, stop, **request)\n"
                "        started = now_us()\n"
            ),
        ),
    ),
    mutant(
        "snapshot: no clock-skew margin",
        SNAPSHOT,
        "stack",
        (
            "backfill/snapshot.py",
            "        version, items = read_version_us(page.request_us, job.margin), page.items",
            "        version, items = page.request_us, page.items",
        ),
    ),
    mutant(
        "snapshot: every row at the run's start",
        SNAPSHOT,
        "stack",
        (
            "backfill/snapshot.py",
            "        version, items = read_version_us(page.request_us, job.margin), page.items",
            "        version, items = run.min_version_us, page.items",
        ),
    ),
    mutant(
        "snapshot: the prune hold without the margin",
        SNAPSHOT,
        "stack",
        (
            "backfill/snapshot.py",
            "        min_version_us=read_version_us(now_us(), margin_us(settings)),",
            "        min_version_us=now_us(),",
        ),
    ),
    # delete modes: a REMOVE does what its cause's mode says, under the version rule
    mutant(
        "deletes: a REMOVE of unknown cause takes the mode that keeps less",
        DELETES,
        "unit",
        (
            "schema/deletes.py",
            "return user if _KEEPS[user] >= _KEEPS[ttl] else ttl",
            "return user if _KEEPS[user] <= _KEEPS[ttl] else ttl",
        ),
    ),
    mutant(
        "deletes: an expiry as any delete is always hard",
        DELETES,
        "unit",
        (
            "schema/deletes.py",
            'return self.deletes if self.ttl_deletes == "delete" else self.ttl_deletes',
            'return "hard" if self.ttl_deletes == "delete" else self.ttl_deletes',
        ),
    ),
    mutant(
        "deletes: a TTL expiry taken for a user's delete",
        DELETES,
        "unit",
        ("cleanse/__init__.py", "    if record.is_ttl_delete:\n", "    if False:\n"),
    ),
    mutant(
        "ttl: any service's REMOVE taken for an expiry",
        ("tests/unit/test_decode.py", "-k", "expiry"),
        "unit",
        (
            "decode/envelope.py",
            'kind == "Service" and principal == TTL_PRINCIPAL',
            'kind == "Service"',
        ),
    ),
    mutant(
        "deletes: the last image taken by the user's mode whatever the cause",
        DELETE_MODES,
        "db",
        (
            "cleanse/__init__.py",
            'self._policy.mode(cause) == "hard"',
            'self._policy.deletes == "hard"',
        ),
    ),
    mutant(
        "soft: a newer INSERT leaves the mark",
        DELETE_MODES,
        "db",
        (
            W,
            "self._cleared = {DELETED_AT: sa.null()} if tables.mapping.policy.marks else {}",
            "self._cleared = {}",
        ),
    ),
    mutant(
        "soft: the mark is the wall clock, not the REMOVE's time",
        DELETE_MODES,
        "db",
        (
            W,
            "deleted_at = _EPOCH + s.c._ddbcdc_version_us * _ONE_US",
            "deleted_at = sa.func.now()",
        ),
    ),
    mutant(
        "keep: an expiry's kept row is marked",
        DELETE_MODES,
        "db",
        (
            W,
            'values.append(sa.case((s.c._ddbcdc_mode == "soft", deleted_at)))',
            'values.append(sa.case((s.c._ddbcdc_mode != "hard", deleted_at)))',
        ),
    ),
    mutant(
        "kept rows: a REMOVE the versions row does not hold writes its last image",
        DELETE_MODES,
        "db",
        (
            W,
            "            ver.c._ddbcdc_version_us == s.c._ddbcdc_version_us,\n"
            "            ver.c._ddbcdc_event_id == s.c._ddbcdc_event_id,\n",
            "",
        ),
    ),
    mutant(
        "kept rows: an expiry's kept row counted as a live item",
        DELETE_MODES,
        "db",
        ("schema/tables.py", "        if policy.keeps:\n", "        if False:\n"),
    ),
    mutant(
        "verify: a live item's marked row not different",
        VERIFY_DELETES,
        "stack",
        (
            "verify/rows.py",
            "self.mark = DELETED_AT if mapping.policy.marks and not mapping.routes else None",
            "self.mark = None",
        ),
    ),
    # verify: a difference in any stored column is found
    mutant(
        "verify: the last stored column ignored",
        VERIFY,
        "stack",
        (
            "verify/rows.py",
            "self.names = list(mapping.stored_columns)",
            "self.names = list(mapping.stored_columns)[:-1]",
        ),
    ),
    mutant(
        "verify: the last mapped column ignored",
        VERIFY,
        "stack",
        (
            "verify/rows.py",
            "self.names = list(mapping.stored_columns)",
            "self.names = [n for n in mapping.stored_columns if n != mapping.columns[-1].name]",
        ),
    ),
    mutant(
        "verify: a row that differs is not a suspect",
        VERIFY,
        "stack",
        (
            "verify/run.py",
            "if have is None or not self.rows.same(have[0], row):",
            "if have is None:",
        ),
    ),
    mutant(
        "verify: jsonb columns not compared",
        VERIFY,
        "stack",
        (
            "verify/rows.py",
            "        return self.comparable(a) == self.comparable(b)",
            "        plain = [n for n in self.names if n not in self.jsonb]\n"
            "        return [a[n] for n in plain] == [b[n] for n in plain]",
        ),
    ),
    mutant(
        "verify: compare's rows that differ not different",
        VERIFY,
        "stack",
        (
            "verify/compare.py",
            "if expected[k] != actual[k]",
            "if expected[k] is not actual[k] and not expected[k]",
        ),
    ),
]


# -- planting and restoring ------------------------------------------------------------


def _file(edit: Edit) -> Path:
    return ROOT / "src" / "ddbcdc" / edit.path


def check(mutants: list[Mutant]) -> list[str]:
    """Every edit's text occurs exactly once in its file (else the code moved)."""
    problems = []
    for m in mutants:
        for edit in m.edits:
            path = _file(edit)
            count = path.read_text().count(edit.old) if path.exists() else -1
            if count != 1:
                where = "missing file" if count < 0 else f"found {count} times"
                problems.append(f"{m.name}: {where} in src/ddbcdc/{edit.path}:\n    {edit.old!r}")
    return problems


def restore_leftovers() -> None:
    """Put back files a killed run left mutated (their copies are in .mutants/)."""
    if not BACKUP.exists():
        return
    for copy in (p for p in BACKUP.rglob("*") if p.is_file()):  # .py and .sql
        target = ROOT / copy.relative_to(BACKUP)
        shutil.copy2(copy, target)
        print(f"restored {target.relative_to(ROOT)} from an interrupted run", file=sys.stderr)
    shutil.rmtree(BACKUP)


@contextlib.contextmanager
def planted(m: Mutant, serial: int) -> Iterator[None]:
    """The mutant's edits in place; the files as they were afterwards, whatever happens."""
    paths = sorted({_file(e) for e in m.edits})
    saved: dict[Path, tuple[bytes, os.stat_result]] = {}
    try:
        for path in paths:
            saved[path] = (path.read_bytes(), path.stat())
            copy = BACKUP / path.relative_to(ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
        for edit in m.edits:
            path = _file(edit)
            path.write_text(path.read_text().replace(edit.old, edit.new, 1))
        for path in paths:
            # A modification time of its own: no bytecode cached for another version of the
            # file (same size, same second) can stand in for this one.
            mtime = saved[path][1].st_mtime + 100_000 + serial
            os.utime(path, (mtime, mtime))
        yield
    finally:
        for path, (data, stat) in saved.items():
            path.write_bytes(data)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        shutil.rmtree(BACKUP, ignore_errors=True)


# -- running ---------------------------------------------------------------------------


@dataclass
class Outcome:
    status: str  # caught, survived, error
    seconds: float
    detail: str = ""


def run_tests(tests: tuple[str, ...], env: dict[str, str]) -> Outcome:
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "--no-header", "-p", "no:cacheprovider"]
    started = time.monotonic()
    try:
        done = subprocess.run(
            [*argv, *tests],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Outcome("caught", time.monotonic() - started, f"timed out after {TIMEOUT}s")
    seconds = time.monotonic() - started
    failed = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - |$)", done.stdout, re.MULTILINE)
    if done.returncode == 0:
        return Outcome("survived", seconds)
    if done.returncode in (1, 2) and (failed or "error" in done.stdout.lower()):
        return Outcome("caught", seconds, failed[0] if failed else "an error")
    tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
    return Outcome("error", seconds, f"pytest exit {done.returncode}: " + " | ".join(tail))


@contextlib.contextmanager
def database(needed: bool) -> Iterator[dict[str, str]]:
    """The tests' environment: CI=1 and, when needed, one PostgreSQL for the whole run."""
    env = {**os.environ, "CI": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if not needed or env.get("DATABASE_URL"):
        yield env
        return
    from ddbcdc.local.postgres import TemporaryPostgres

    with TemporaryPostgres() as pg:
        yield {**env, "DATABASE_URL": pg.url}


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # restores the files on the way out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tier", choices=TIERS, help="only mutants whose tests need at most this")
    parser.add_argument("--only", action="append", default=[], help="names containing this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated runs")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    chosen = [
        m
        for m in MUTANTS
        if (args.tier is None or TIERS.index(m.tier) <= TIERS.index(args.tier))
        and (not args.only or any(o.lower() in m.name.lower() for o in args.only))
    ]
    if args.list:
        for m in chosen:
            print(f"{m.tier:5}  {m.name}  [{' '.join(m.tests)}]")
        return 0
    signal.signal(signal.SIGTERM, _stop)
    restore_leftovers()
    problems = check(chosen)
    if problems:
        print("mutants whose text is not in the code (it moved: update them):", file=sys.stderr)
        print("\n".join(problems), file=sys.stderr)
        return 2
    results: list[tuple[Mutant, Outcome]] = []
    started = time.monotonic()
    try:
        with database(any(m.tier != "unit" for m in chosen)) as env:
            if not args.no_baseline and not baseline(chosen, env):
                return 2
            for serial, m in enumerate(chosen, 1):
                with planted(m, serial):
                    outcome = run_tests(m.tests, env)
                results.append((m, outcome))
                print(
                    f"[{serial:2}/{len(chosen)}] {outcome.status:8} {outcome.seconds:6.1f}s  "
                    f"{m.name}  {outcome.detail}",
                    flush=True,
                )
    except KeyboardInterrupt:
        print("interrupted: every file is restored", file=sys.stderr)
        return 2
    report(results, time.monotonic() - started, markdown=args.markdown)
    return 0 if all(o.status == "caught" for _, o in results) else 1


def baseline(chosen: list[Mutant], env: dict[str, str]) -> bool:
    """Each distinct test selection passes on the code as it is (else nothing is measured)."""
    for tests in dict.fromkeys(m.tests for m in chosen):
        outcome = run_tests(tests, env)
        print(f"[baseline] {outcome.seconds:6.1f}s  {' '.join(tests)}", flush=True)
        if outcome.status != "survived":
            print(f"the tests fail without a mutant: {outcome.detail}", file=sys.stderr)
            return False
    return True


def report(results: list[tuple[Mutant, Outcome]], seconds: float, *, markdown: bool) -> None:
    survivors = [m.name for m, o in results if o.status == "survived"]
    errors = [f"{m.name}: {o.detail}" for m, o in results if o.status == "error"]
    caught = sum(o.status == "caught" for _, o in results)
    print(
        f"\n{caught} of {len(results)} mutants caught, {len(survivors)} survived, "
        f"{len(errors)} errors, in {seconds / 60:.1f} min"
    )
    for name in survivors:
        print(f"  survived: {name}")
    for line in errors:
        print(f"  error: {line}")
    if markdown:
        print("\n| mutant | tier | result | caught by |\n| --- | --- | --- | --- |")
        for m, o in results:
            print(f"| {m.name} | {m.tier} | {o.status} | `{o.detail}` |")


if __name__ == "__main__":
    sys.exit(main())
