"""Generate the input files of the decode benchmark: base64 Kinesis-format change records.

``simple``: records like the example in the README (a customers table: userid N key,
first_name S, last_name S, phone N; INSERT/MODIFY/REMOVE). ``rich``: every attribute type
and the awkward numbers (38 digits, exponents, trailing zeros), sets, binary, nesting.

    .venv/bin/python benchmarks/decode_data.py [--count N] [--out DIR]
"""

from __future__ import annotations

import argparse
import base64
import random
import string
import uuid
from pathlib import Path
from typing import Any

import orjson

DEFAULT_DIR = Path(__file__).resolve().parent / "results" / "decode-input"
KINDS = ("simple", "rich")


def _word(rng: random.Random, size: int = 7) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


def _customer(rng: random.Random, userid: int) -> dict[str, Any]:
    name = _word(rng)
    return {
        "last_name": {"S": name},
        "phone": {"N": str(rng.randrange(10**9, 10**10))},
        "userid": {"N": str(userid)},
        "first_name": {"S": name},
    }


def _rich(rng: random.Random, userid: int) -> dict[str, Any]:
    blob = base64.b64encode(rng.randbytes(rng.randrange(1, 48))).decode()
    return {
        "userid": {"N": str(userid)},
        "name": {"S": _word(rng, 12)},
        "greeting": {"S": "grüße, 世界 🙂"},
        "balance": {"N": f"{rng.randrange(10**6)}.{rng.randrange(10**4):04d}"},
        "big": {"N": "".join(rng.choices(string.digits[1:], k=38))},
        "sci": {"N": "1.10E+5"},
        "tiny": {"N": "1E-130"},
        "negative": {"N": str(-rng.randrange(10**6))},
        "photo": {"B": blob},
        "active": {"BOOL": rng.random() < 0.5},
        "nothing": {"NULL": True},
        "tags": {"SS": sorted({_word(rng, 5) for _ in range(3)})},
        "scores": {"NS": sorted({str(rng.randrange(1000)) for _ in range(3)} | {"2.50"})},
        "blobs": {"BS": ["AAEC", "/w=="]},
        "history": {"L": [{"N": str(i)} for i in range(3)] + [{"S": _word(rng)}]},
        "address": {
            "M": {
                "city": {"S": _word(rng)},
                "geo": {"M": {"lat": {"N": "52.5200"}, "lon": {"N": "13.4050"}}},
            }
        },
    }


def change_record(rng: random.Random, kind: str, index: int) -> dict[str, Any]:
    """One Kinesis Data Streams for DynamoDB record of the given kind."""
    userid = rng.randrange(1, 10_000)
    image = _customer if kind == "simple" else _rich
    event_name = rng.choices(("INSERT", "MODIFY", "REMOVE"), weights=(2, 6, 1))[0]
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": 1667565639982 + index,
        "Keys": {"userid": {"N": str(userid)}},
    }
    if event_name != "REMOVE":
        dynamodb["NewImage"] = image(rng, userid)
    if event_name != "INSERT":
        dynamodb["OldImage"] = image(rng, userid)
    dynamodb["SizeBytes"] = len(orjson.dumps(dynamodb))
    return {
        "awsRegion": "us-west-2",
        "eventID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "eventName": event_name,
        "userIdentity": None,
        "recordFormat": "application/json",
        "tableName": "customers",
        "dynamodb": dynamodb,
        "eventSource": "aws:dynamodb",
    }


def generate(path: Path, kind: str, count: int, *, seed: int = 2) -> Path:
    """Write ``count`` base64 records of ``kind``, one per line, to ``path``."""
    rng = random.Random(f"{seed}-{kind}")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (base64.b64encode(orjson.dumps(change_record(rng, kind, i))) for i in range(count))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def ensure(directory: Path, count: int) -> dict[str, Path]:
    """The input file of each kind in ``directory``, generated when absent or too short."""
    files = {}
    for kind in KINDS:
        path = directory / f"{kind}-{count}.b64"
        if not path.exists():
            generate(path, kind, count)
        files[kind] = path
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    for kind, path in ensure(args.out, args.count).items():
        print(kind, path)


if __name__ == "__main__":
    main()
