"""Cleanse cost per change: ``Cleanser.cleanse`` on decoded records, per mapping variant.

    .venv/bin/python benchmarks/cleanse_bench.py [--count N] [--repeat R] [--cpu C]

Records are decoded once, outside the timing; each round then cleanses every input with
every mapping, one after the other, so machine noise hits all of them alike. Inputs:
``simple`` (the customers records: userid N key, first_name/last_name S, phone N, all
mapped) and ``wide`` (the same plus five attributes no column names: S, N with a fraction,
SS, M, BOOL). Mappings: ``plain`` (the customers columns), ``extra`` (plus a jsonb column
keeping the unmapped attributes), ``extra+item`` (plus one keeping the whole item). A
variant the installed ddbcdc cannot parse (a checkout from before the extra column) is
reported as n/a, so the same script measures before and after.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import string
import time
from typing import Any

from ddbcdc.cleanse import Cleanser
from ddbcdc.decode.record import ChangeRecord, decode_record
from ddbcdc.errors import ConfigurationError
from ddbcdc.schema.mapping import TableMapping, parse_mapping

COLUMNS = [
    {"name": "userid", "source": "userid", "type": "bigint", "required": True},
    {"name": "first_name", "type": "text", "rules": ["trim"]},
    {"name": "last_name", "type": "text", "rules": ["trim"]},
    {"name": "phone", "type": "text", "rules": ["digits_only"]},
]
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "extra": {"extra": {"column": "attributes"}},
    "extra+item": {"extra": {"column": "attributes", "item_column": "item"}},
}


def _mapping(options: dict[str, Any]) -> TableMapping | None:
    raw = {
        "source_table": "customers",
        "target_table": "customers",
        "key": ["userid"],
        "columns": COLUMNS,
        **options,
    }
    try:
        return parse_mapping(raw, name="customers")
    except ConfigurationError:
        return None


def _word(rng: random.Random, size: int = 7) -> str:
    return "".join(rng.choices(string.ascii_letters, k=size))


def _image(rng: random.Random, userid: int, wide: bool) -> dict[str, Any]:
    image: dict[str, Any] = {
        "userid": {"N": str(userid)},
        "first_name": {"S": _word(rng)},
        "last_name": {"S": _word(rng)},
        "phone": {"N": str(rng.randrange(10**9, 10**10))},
    }
    if wide:
        image |= {
            "city": {"S": _word(rng, 9)},
            "score": {"N": f"{rng.randrange(1000)}.{rng.randrange(100):02d}"},
            "tags": {"SS": sorted({_word(rng, 4) for _ in range(3)})},
            "prefs": {"M": {"lang": {"S": "en"}, "mails": {"N": str(rng.randrange(9))}}},
            "active": {"BOOL": rng.random() < 0.5},
        }
    return image


def records(count: int, *, wide: bool, seed: int = 1) -> list[ChangeRecord]:
    """``count`` INSERT/MODIFY records of distinct keys, decoded."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        image = _image(rng, index + 1, wide)
        raw = {
            "awsRegion": "us-east-1",
            "eventID": f"e-{index}",
            "eventName": "INSERT" if index % 3 else "MODIFY",
            "recordFormat": "application/json",
            "tableName": "customers",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_700_000_000_000 + index,
                "Keys": {"userid": image["userid"]},
                "NewImage": image,
                "SizeBytes": 100,
            },
        }
        out.append(decode_record(raw))
    return out


def _time(cleanser: Cleanser, batch: list[ChangeRecord]) -> float:
    cleanse = cleanser.cleanse
    gc.disable()
    started = time.perf_counter()
    for record in batch:
        cleanse(record)
    elapsed = time.perf_counter() - started
    gc.enable()
    return elapsed / len(batch) * 1e6


def main() -> None:
    """Run the rounds and print µs per change (best and median round)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--cpu", type=int, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    inputs = {
        "simple": records(args.count, wide=False),
        "wide": records(args.count, wide=True),
    }
    cleansers = {name: _mapping(options) for name, options in VARIANTS.items()}
    contenders = [
        (f"{kind} / {name}", Cleanser(mapping), batch)
        for kind, batch in inputs.items()
        for name, mapping in cleansers.items()
        if mapping is not None
    ]
    times: dict[str, list[float]] = {label: [] for label, _, _ in contenders}
    for _ in range(args.repeat):
        for label, cleanser, batch in contenders:
            times[label].append(_time(cleanser, batch))
    print(f"{'input / mapping':<22} {'best µs':>9} {'median µs':>10}")
    for kind in inputs:
        for name in VARIANTS:
            label = f"{kind} / {name}"
            if label not in times:
                print(f"{label:<22} {'n/a':>9} {'n/a':>10}")
                continue
            runs = times[label]
            print(f"{label:<22} {min(runs):>9.2f} {statistics.median(runs):>10.2f}")


if __name__ == "__main__":
    main()
