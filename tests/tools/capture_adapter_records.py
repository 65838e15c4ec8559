"""Capture what the DynamoDB Streams Kinesis Adapter hands a KCL record processor.

Runs the local stack's DynamoDB Streams front over moto, the real StreamsDaemon (adapter
2.0.1, KCL 3.1.3) and a kclpy processor that appends every record it receives, as kclpy
gives it, to a JSON Lines file. ``tests/fixtures/adapter/front-same-second.jsonl`` was made
with it::

    .venv/bin/python tests/tools/capture_adapter_records.py OUT.jsonl

(``moto-every-type.jsonl`` is the same capture against moto's own stream, whose timestamps
keep milliseconds.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import boto3

from ddbcdc.local.stack import LocalStack
from ddbcdc.worker import daemon, streams
from ddbcdc.worker.properties import WorkerOptions, render_properties

HERE = Path(__file__).resolve().parent
WRITES = [
    (
        "put_item",
        {
            "Item": {
                "userid": {"N": "7"},
                "first_name": {"S": "Grace"},
                "phone": {"N": "4420794601234"},
                "score": {"N": "-0.000120"},
                "photo": {"B": b"\xff\xd8\xff"},
                "langs": {"SS": ["COBOL", "FLOW-MATIC"]},
                "lucky": {"NS": ["7", "1E+3"]},
                "keys": {"BS": [b"\x01", b"\x02"]},
                "active": {"BOOL": False},
                "manager": {"NULL": True},
                "ranks": {"L": [{"N": "1"}, {"S": "two"}, {"L": []}]},
                "address": {"M": {"city": {"S": "Arlington"}, "zip": {"N": "22201"}}},
            }
        },
    ),
    (
        "update_item",
        {
            "Key": {"userid": {"N": "7"}},
            "UpdateExpression": "SET first_name = :n REMOVE manager",
            "ExpressionAttributeValues": {":n": {"S": "Grace B."}},
        },
    ),
    (
        "update_item",
        {
            "Key": {"userid": {"N": "7"}},
            "UpdateExpression": "SET phone = :p",
            "ExpressionAttributeValues": {":p": {"N": "4420794601235"}},
        },
    ),
    ("delete_item", {"Key": {"userid": {"N": "7"}}}),
]


def main(out: Path) -> int:
    out.unlink(missing_ok=True)
    with LocalStack(postgres=False, source="dynamodb-streams", shards=1) as stack:
        os.environ.update(stack.env)
        client = boto3.client("dynamodb", endpoint_url=stack.info.moto_endpoint)
        client.create_table(
            TableName="customers",
            KeySchema=[{"AttributeName": "userid", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "userid", "AttributeType": "N"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        arn = client.describe_table(TableName="customers")["Table"]["LatestStreamArn"]
        settings = stack.settings(
            source="dynamodb-streams",
            stream_arn=arn,
            database_url="postgresql://unused@127.0.0.1/unused",
            application_name="capture",
        )
        options = WorkerOptions.from_settings(settings, worker_id="capture")
        processor = f"{sys.executable} {HERE / 'capture_processor.py'}"
        properties = out.with_suffix(".properties")
        properties.write_text(render_properties(options, executable=processor))
        java = daemon.check_java()
        jars, launcher = streams.prepare(settings, java, daemon.find_jars())
        command = daemon.daemon_command(java, jars, properties, launcher=launcher)
        env = dict(os.environ, CAPTURE_FILE=str(out))
        with out.with_suffix(".log").open("wb") as log:
            proc = subprocess.Popen(command, env=env, stderr=log, stdout=subprocess.DEVNULL)
        for call, kwargs in WRITES:
            getattr(client, call)(TableName="customers", **kwargs)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if out.exists() and len(out.read_text().splitlines()) >= len(WRITES):
                break
            time.sleep(1)
        proc.terminate()
        proc.wait(60)
    return 0 if out.exists() else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
