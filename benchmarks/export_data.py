"""Writes a full DynamoDB export of ``customers`` items, laid out as AWS writes one.

    .venv/bin/python benchmarks/export_data.py OUT_DIR [--items 1000000] [--per-file 250000]

``OUT_DIR`` gets ``manifest-summary.json``, ``manifest-files.json`` and ``data/*.json.gz``
(lines ``{"Item": {...}}``, DynamoDB JSON), with item counts and MD5 checksums, exactly the
shape ``ddbcdc snapshot --from-export`` reads. Deterministic for a given size.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import random
import sys
from pathlib import Path

import orjson

_FIRST = ("Ada", "Alan", "Barbara", "Claude", "Dennis", "Edsger", "Frances", "Grace")
_LAST = ("Hopper", "Knuth", "Lamport", "Liskov", "Lovelace", "Ritchie", "Turing", "Wirth")
EXPORT_TIME = "2026-11-30T12:00:00.000Z"


def _item(rng: random.Random, userid: int) -> bytes:
    item = {
        "userid": {"N": str(userid)},
        "first_name": {"S": rng.choice(_FIRST)},
        "last_name": {"S": rng.choice(_LAST)},
        "phone": {"N": str(rng.randrange(2_000_000_000, 10_000_000_000))},
    }
    return orjson.dumps({"Item": item}) + b"\n"


def write_export(
    out: Path, items: int, per_file: int, *, export_id: str = "01764504000000-bench"
) -> None:
    """Write the export folder (see the module doc)."""
    rng = random.Random(items)
    (out / "data").mkdir(parents=True, exist_ok=True)
    root = f"bench/AWSDynamoDB/{export_id}"
    manifest_lines = []
    for index, start in enumerate(range(1, items + 1, per_file)):
        count = min(per_file, items + 1 - start)
        path = out / "data" / f"file{index:04d}.json.gz"
        with gzip.open(path, "wb", compresslevel=1) as data:
            for userid in range(start, start + count):
                data.write(_item(rng, userid))
        md5 = base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()
        manifest_lines.append(
            orjson.dumps(
                {
                    "itemCount": count,
                    "md5Checksum": md5,
                    "dataFileS3Key": f"{root}/data/{path.name}",
                }
            )
        )
    (out / "manifest-files.json").write_bytes(b"\n".join(manifest_lines) + b"\n")
    summary = {
        "version": "2020-06-30",
        "exportArn": f"arn:aws:dynamodb:us-east-1:123456789012:table/customers/export/{export_id}",
        "startTime": EXPORT_TIME,
        "endTime": EXPORT_TIME,
        "tableArn": "arn:aws:dynamodb:us-east-1:123456789012:table/customers",
        "exportTime": EXPORT_TIME,
        "s3Bucket": "bench",
        "s3Prefix": "bench",
        "manifestFilesS3Key": f"{root}/manifest-files.json",
        "billedSizeBytes": 0,
        "itemCount": items,
        "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
    }
    (out / "manifest-summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--per-file", type=int, default=250_000)
    args = parser.parse_args()
    write_export(args.out, args.items, args.per_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
