"""The MultiLangDaemon's ``processRecords`` line, parsed kclpy's way and ddbcdc's way.

Builds one ``processRecords`` message line as the daemon writes it (``--records`` records,
each a base64 Kinesis change record of the customers shape, ~500 bytes of data), then times,
best of ``--rounds``, per record:

- ``kclpy``: ``amazon_kclpy.kcl._IOHandler.load_action`` (``json.loads`` with kclpy's
  ``object_hook``: a ``messages.Record`` per record) and reading each record's
  ``binary_data`` (a ``base64.b64decode`` each), ``sequence_number`` and ``partition_key``,
  as a record processor does (with the collector tuned as in a shard processor);
- ``ddbcdc``: :func:`ddbcdc.worker.protocol.load_action` (orjson, a ``RawRecord`` per record
  with the data decoded once by ``binascii``) and reading the same three fields.

    .venv/bin/python benchmarks/kcl_messages_bench.py [--records 10000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from collections.abc import Callable
from typing import Any

from amazon_kclpy import kcl

from ddbcdc.runtime import tune_gc
from ddbcdc.worker import protocol


def _line(records: int) -> str:
    body = {
        "awsRegion": "us-east-1",
        "eventID": "",
        "eventName": "MODIFY",
        "tableName": "customers",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_700_000_000_000_000,
            "Keys": {"userid": {"N": "0"}},
            "NewImage": {
                "userid": {"N": "0"},
                "first_name": {"S": "Ada"},
                "last_name": {"S": "Lovelace"},
                "phone": {"S": "+1 555 0100"},
                "city": {"S": "London"},
                "note": {"S": "x" * 40},
            },
            "SizeBytes": 180,
        },
        "eventSource": "aws:dynamodb",
    }
    items = []
    for n in range(records):
        body["eventID"] = f"{n:032x}"
        body["dynamodb"]["Keys"]["userid"]["N"] = str(n)  # type: ignore[index]
        data = base64.b64encode(json.dumps(body).encode()).decode()
        items.append(
            {
                "action": "record",
                "data": data,
                "partitionKey": str(n),
                "sequenceNumber": str(49_590_338_271_490_256_608_559_692_538_361_571_095 + n),
                "subSequenceNumber": None,
                "approximateArrivalTimestamp": 1_700_000_000_000,
            }
        )
    message = {"action": "processRecords", "millisBehindLatest": 0, "records": items}
    return json.dumps(message)


def _kclpy(line: str) -> int:
    handler = kcl._IOHandler(None, None, None)
    action = handler.load_action(line)
    size = 0
    for record in action.records:
        size += len(record.binary_data) + len(record.sequence_number) + len(record.partition_key)
    return size


def _ddbcdc(line: str) -> int:
    action = protocol.load_action(line)
    size = 0
    for record in action.records:
        size += len(record.binary_data) + len(record.sequence_number) + len(record.partition_key)
    return size


def _best(way: Callable[[str], Any], line: str, rounds: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.perf_counter()
        result = way(line)
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    line = _line(args.records)
    tune_gc()  # as a shard processor runs
    kclpy_s, theirs = _best(_kclpy, line, args.rounds)
    ddbcdc_s, ours = _best(_ddbcdc, line, args.rounds)
    assert theirs == ours, "the two ways read different records"
    per = {"kclpy": kclpy_s / args.records * 1e6, "ddbcdc": ddbcdc_s / args.records * 1e6}
    report = {
        "records": args.records,
        "line_bytes": len(line),
        "kclpy_us_per_record": round(per["kclpy"], 2),
        "ddbcdc_us_per_record": round(per["ddbcdc"], 2),
        "speedup": round(per["kclpy"] / per["ddbcdc"], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
