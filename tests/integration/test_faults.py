# ruff: noqa: E501  (the table of cases reads best one case a line)
"""Every command ends a fault of its environment in one line on stderr, exit status 2.

Each command of ``ddbcdc.cli.COMMANDS`` (a command added without cases here fails) meets the
faults it can meet, on real emulators: AWS unreachable (every endpoint a closed port), a
table or stream that does not exist, a bucket that does not exist, an export path that is
absent, one folder too high or empty, access denied (a moto that enforces IAM and a user
allowed nothing ddbcdc does), PostgreSQL unreachable (a closed port, with a password that
must not show), and the file system (a missing input, a file where a folder should be, a
full disk as standard output). Each case must exit 2 with exactly one line on stderr, no
traceback, naming what failed and where.

The cases of one command run one after the other in one process (``tests/fault_driver.py``),
and the commands' processes four at a time: most of the time goes to the AWS clients'
retries against the closed port.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ddbcdc.aws import clients as aws
from ddbcdc.cli import COMMANDS
from ddbcdc.local.postgres import free_port
from ddbcdc.local.stack import LocalStack
from ddbcdc.schema.mapping import load_mappings
from iam_fixtures import IamMoto, enforce, user_with_policy
from worker_runs import MAPPINGS_DIR, ROOT

pytestmark = pytest.mark.slow

SECRET = "s3cr3t-pw-4711"  # the unreachable PostgreSQL's password: never on stderr
DRIVER = ROOT / "tests" / "fault_driver.py"
NOTHING_ALLOWED = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}],
    }
)


@dataclass(frozen=True)
class Case:
    """One command line in one fault, and what its one line must name.

    ``argv`` and ``names`` are formatted with :class:`World`'s fields (``{absent}``).
    """

    fault: str  # unreachable, missing, denied, postgres, export, file
    argv: tuple[str, ...]
    names: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    stdout: str | None = None


UNREACHABLE = ("127.0.0.1:{closed}", "cannot connect")
POSTGRES = ("PostgreSQL", "port {closed}")
DENIED = ("denied",)  # AccessDenied, AccessDeniedException, access denied (HTTP 403)
EXPORT_TIME = ("--export-time", "2024-05-01T00:00:00Z")

CASES: dict[str, list[Case]] = {
    "demo": [
        Case("postgres", ("demo", "--database-url", "{pg_closed}"), POSTGRES),
        Case("file", ("demo", "--log-dir", "{a_file}/logs"), ("{a_file}/logs",)),
    ],
    "local": [
        Case("file", ("local", "--state-dir", "{a_file}/state", "env"), ("{a_file}/state",)),
        Case("file", ("local", "--state-dir", "{a_file}/state", "up"), ("{a_file}/state",)),
    ],
    "migrate": [
        Case("postgres", ("migrate",), POSTGRES),
        Case("file", ("migrate",), ("{tmp}/no-mappings",), {"DDBCDC_MAPPINGS_DIR": "{tmp}/no-mappings"}),
        Case("postgres", ("migrate",), ("DATABASE_URL", "'sqlite'"), {"DATABASE_URL": "sqlite:///{tmp}/copy.db"}),
    ],
    "mapping": [
        Case("unreachable", ("mapping", "infer", "--table", "{absent}"), UNREACHABLE),
        Case("missing", ("mapping", "infer", "--table", "{absent}"), ("ResourceNotFoundException", "table {absent}")),
        Case("denied", ("mapping", "infer", "--table", "{present}"), (*DENIED, "table {present}")),
        Case("file", ("mapping", "infer", "--table", "{present}", "--output", "{tmp}/no/m.json"), ("{tmp}/no/m.json",)),
    ],
    "setup": [
        Case("unreachable", ("setup", "--table", "{absent}", "--stream", "{absent}"), UNREACHABLE),
        Case("denied", ("setup", "--table", "{absent}", "--stream", "{stream}"), (*DENIED, "stream {stream}")),
    ],
    "worker": [
        Case("unreachable", ("worker",), UNREACHABLE),
        Case("missing", ("worker", "--stream", "{absent}"), ("ResourceNotFoundException", "stream {absent}")),
        Case("denied", ("worker",), (*DENIED, "stream {stream}")),
        Case("postgres", ("worker",), POSTGRES),
        Case("file", ("worker",), ("{a_file}", "is not a directory"), {"DDBCDC_MAPPINGS_DIR": "{a_file}"}),
        Case("file", ("worker", "--java", "{tmp}/no-java"), ("{tmp}/no-java", "java not found")),
    ],
    "load": [
        Case("unreachable", ("load", "--count", "5"), UNREACHABLE),
        Case("missing", ("load", "--count", "5", "--table", "{absent}"), ("ResourceNotFoundException", "table {absent}")),
        Case("denied", ("load", "--count", "5"), (*DENIED, "table {present}")),
    ],
    "snapshot": [
        Case("unreachable", ("snapshot", "--no-progress"), UNREACHABLE),
        Case("missing", ("snapshot", "--no-progress", "--table", "{absent}"), ("ResourceNotFoundException", "table {absent}")),
        Case("missing", ("snapshot", "--from-export", "s3://{no_bucket}/x/AWSDynamoDB/1/"), ("NoSuchBucket", "s3://{no_bucket}/")),
        Case("export", ("snapshot", "--from-export", "{tmp}/no-export"), ("{tmp}/no-export",)),
        Case("export", ("snapshot", "--from-export", "{exports}/AWSDynamoDB", *EXPORT_TIME), ("{exports}/AWSDynamoDB", "nothing to import")),
        Case("export", ("snapshot", "--from-export", "s3://{bucket}/empty/AWSDynamoDB/1/", *EXPORT_TIME), ("s3://{bucket}/empty/AWSDynamoDB/1", "nothing to import")),
        Case("denied", ("snapshot", "--no-progress"), (*DENIED, "table {present}")),
        Case("postgres", ("snapshot", "--no-progress"), POSTGRES),
    ],
    "export": [
        Case("unreachable", ("export", "--bucket", "{bucket}"), UNREACHABLE),
        Case("missing", ("export", "--table", "{absent}", "--bucket", "{bucket}"), ("ResourceNotFoundException", "table {absent}")),
        Case("missing", ("export", "--bucket", "{no_bucket}"), ("NoSuchBucket", "s3://{no_bucket}/")),
        Case("denied", ("export", "--bucket", "{bucket}"), (*DENIED, "s3://{bucket}/")),
        Case("postgres", ("export", "--bucket", "{bucket}"), POSTGRES),
    ],
    "verify": [
        Case("unreachable", ("verify", "--no-progress"), UNREACHABLE),
        Case("missing", ("verify", "--no-progress", "--table", "{absent}"), ("ResourceNotFoundException", "table {absent}")),
        Case("denied", ("verify", "--no-progress"), (*DENIED, "table {present}")),
        Case("postgres", ("verify", "--no-progress"), POSTGRES),
    ],
    "status": [Case("postgres", ("status",), POSTGRES)],
    "apply": [
        Case("postgres", ("apply", "{records}"), POSTGRES),
        Case("postgres", ("apply", "{records}"), ("DATABASE_URL", "'mysql'"), {"DATABASE_URL": "mysql://ddbcdc:" + SECRET + "@127.0.0.1/x"}),
        Case("file", ("apply", "{tmp}/no-such.jsonl"), ("{tmp}/no-such.jsonl",)),
    ],
    "decode": [
        Case("file", ("decode", "{tmp}/no-such.jsonl"), ("{tmp}/no-such.jsonl",)),
        Case("file", ("decode", "{tmp}"), ("{tmp}",)),
    ],
    "dlq": [
        Case("postgres", ("dlq", "list"), POSTGRES),
        Case("postgres", ("dlq", "replay"), POSTGRES),
        Case("postgres", ("dlq", "discard", "--stage", "decode", "--yes"), POSTGRES),
    ],
    "iam-policy": [
        Case("file", ("iam-policy", "--account", "123456789012"), ("standard output",), stdout="/dev/full"),
    ],
    "teardown": [
        Case("unreachable", ("teardown", "--yes", "--table", "{absent}", "--stream", "{absent}"), UNREACHABLE),
        Case("denied", ("teardown", "--yes", "--table", "{absent}", "--stream", "{absent}"), (*DENIED, "table {absent}")),
    ],
}  # fmt: skip


@dataclass(frozen=True)
class World:
    """The names and places the cases are formatted with, and each fault's environment."""

    tmp: Path
    closed: int
    absent: str
    present: str
    stream: str
    application: str
    bucket: str
    no_bucket: str
    exports: Path
    a_file: Path
    records: Path
    pg_closed: str
    env: dict[str, dict[str, str]]

    def format(self, text: str) -> str:
        return text.format(**{k: v for k, v in vars(self).items() if k != "env"})

    def case(self, case: Case) -> dict[str, Any]:
        env = {**self.env["base"], **self.env.get(case.fault, {})}
        env.update({k: self.format(v) for k, v in case.env.items()})
        argv = [self.format(arg) for arg in case.argv]
        return {"argv": argv, "env": env, "stdout": case.stdout}


def _mappings(folder: Path, *tables: str) -> Path:
    base = json.loads((MAPPINGS_DIR / "customers.json").read_text())
    folder.mkdir()
    for table in tables:
        mapping = {**base, "source_table": table, "target_table": table.replace("-", "_")}
        (folder / f"{table}.json").write_text(json.dumps(mapping))
    return folder


def _aws_world(stack: LocalStack, present: str, stream: str, bucket: str) -> None:
    """The present table (PITR on, a few items), the stream and an empty bucket."""
    settings = stack.settings()
    dynamodb = aws.client("dynamodb", settings)
    dynamodb.create_table(
        TableName=present,
        KeySchema=[{"AttributeName": "userid", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "userid", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_continuous_backups(
        TableName=present,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )
    for userid in range(3):
        dynamodb.put_item(TableName=present, Item={"userid": {"N": str(userid)}})
    aws.client("kinesis", settings).create_stream(StreamName=stream, ShardCount=1)
    aws.client("s3", settings).create_bucket(Bucket=bucket)


def _export_folder(root: Path) -> Path:
    """An export without manifests, laid out as AWS writes it: root/AWSDynamoDB/<id>/data."""
    data = root / "AWSDynamoDB" / "01714521600000-0a1b2c3d" / "data"
    data.mkdir(parents=True)
    line = json.dumps({"Item": {"userid": {"N": "1"}}}) + "\n"
    (data / "part-0.json.gz").write_bytes(gzip.compress(line.encode()))
    return root


@pytest.fixture(scope="module")
def world(
    local_stack: LocalStack,
    iam_moto: IamMoto,
    fresh_database: Callable[..., AbstractContextManager[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("faults")
    suffix = uuid.uuid4().hex[:8]
    absent, present = f"absent-{suffix}", f"present-{suffix}"
    stream, bucket = f"faults-{suffix}", f"faults-{suffix}"
    mappings = _mappings(tmp / "mappings", absent, present)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            patch.setenv(name, local_stack.env[name])
        _aws_world(local_stack, present, stream, bucket)
    (tmp / "a-file").write_text("not a folder\n")
    denied = user_with_policy(iam_moto, NOTHING_ALLOWED)
    closed = free_port()
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("DDBCDC_", "AWS_", "DATABASE"))
    }
    with fresh_database("t_faults", mappings=load_mappings(mappings)) as url:
        base = {
            **inherited,
            **local_stack.env,
            "DATABASE_URL": url,
            "DDBCDC_MAPPINGS_DIR": str(mappings),
            "DDBCDC_SOURCE_TABLE": present,
            "DDBCDC_STREAM_NAME": stream,
            "DDBCDC_APPLICATION_NAME": f"faults-{suffix}",
        }
        endpoints = [k for k in local_stack.env if k.endswith("_ENDPOINT")]
        pg_closed = f"postgresql+psycopg://ddbcdc:{SECRET}@127.0.0.1:{closed}/ddbcdc"
        env = {
            "base": base,
            "unreachable": {k: f"http://127.0.0.1:{closed}" for k in endpoints},
            "denied": {
                **{k: iam_moto.url for k in endpoints},
                "AWS_ACCESS_KEY_ID": denied["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": denied["SecretAccessKey"],
            },
            "postgres": {"DATABASE_URL": pg_closed},
        }
        enforce(iam_moto, 0)
        try:
            yield World(
                tmp=tmp,
                closed=closed,
                absent=absent,
                present=present,
                stream=stream,
                application=f"faults-{suffix}",
                bucket=bucket,
                no_bucket=f"no-such-bucket-{suffix}",
                exports=_export_folder(tmp / "exports"),
                a_file=tmp / "a-file",
                records=ROOT / "tests" / "fixtures" / "sample-records.jsonl",
                pg_closed=pg_closed,
                env=env,
            )
        finally:
            enforce(iam_moto, float("inf"))


def _drive(world: World, cases: list[Case]) -> list[dict[str, Any]]:
    """Run ``cases`` in one driver process; one result per case."""
    result = subprocess.run(
        [sys.executable, str(DRIVER)],
        input=json.dumps([world.case(case) for case in cases]),
        capture_output=True,
        text=True,
        cwd=world.tmp,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def results(world: World) -> dict[str, list[dict[str, Any]]]:
    """Every command's cases, run: the commands' driver processes four at a time."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        running = {name: pool.submit(_drive, world, cases) for name, cases in CASES.items()}
        return {name: future.result() for name, future in running.items()}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_fault_ends_the_command_in_one_line_naming_it(
    command: str, world: World, results: dict[str, list[dict[str, Any]]]
) -> None:
    assert command in CASES, f"ddbcdc {command} has no fault cases: add them to CASES"
    failures = []
    for case, outcome in zip(CASES[command], results[command], strict=True):
        argv = " ".join(world.case(case)["argv"])
        lines = outcome["stderr"].splitlines()
        expected = [world.format(name) for name in case.names]
        if (
            outcome["status"] != 2
            or len(lines) != 1
            or "Traceback" in outcome["stderr"]
            or not lines[0].startswith(f"ddbcdc {command}: ")
            or not all(name.lower() in lines[0].lower() for name in expected)
            or SECRET in outcome["stderr"]
        ):
            failures.append(
                f"{case.fault}: ddbcdc {argv} -> exit {outcome['status']}, wanted 2 and one "
                f"line naming {expected}; stderr ({outcome['seconds']} s):\n{outcome['stderr']}"
            )
    assert not failures, "\n\n".join(failures)


def test_every_command_meets_the_faults_of_what_it_uses() -> None:
    """AWS commands meet AWS unreachable and denied; every command some fault."""
    uses_aws = {"mapping", "setup", "worker", "load", "snapshot", "export", "verify", "teardown"}
    for command, cases in CASES.items():
        faults = {case.fault for case in cases}
        assert faults, command
        if command in uses_aws:
            assert {"unreachable", "denied"} <= faults, command


def test_postgresql_errors_name_the_objects_never_the_values(postgres_url: str) -> None:
    import sqlalchemy as sa

    from ddbcdc.db import fault

    engine = sa.create_engine(postgres_url, hide_parameters=True)
    try:
        with engine.connect() as conn:
            with pytest.raises(sa.exc.ProgrammingError) as missing:
                conn.execute(sa.text('SELECT 1 FROM "no_such_relation"'))
            conn.rollback()
            with pytest.raises(sa.exc.DataError) as refused:
                conn.execute(sa.text("SELECT CAST(:v AS bigint)"), {"v": "078-05-1120"})
    finally:
        engine.dispose()
    assert fault(missing.value) == (
        "PostgreSQL: SQLSTATE 42P01 UndefinedTable; a table ddbcdc needs is missing (has ddbcdc "
        'migrate run on this database?); relation "no_such_relation" does not exist'
    )
    line = fault(refused.value)
    assert line is not None and "SQLSTATE 22P02" in line and "078-05-1120" not in line
