"""moto's server, checking IAM permissions on the resources and action names AWS uses.

moto enforces IAM policies once asked to (``POST /moto-api/reset-auth`` with the number of
requests to let through first), with two differences from AWS that matter to a policy scoped
to ARNs, which this launcher corrects before starting the server as ``python -m
moto.server`` does:

- it checks every DynamoDB request against the resource ``*``, so a statement scoped to a
  table's ARN allows nothing; here the resource is the table the request names,
  ``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME`` (``.../index/INDEX`` for a query of an
  index), as AWS evaluates it; a DynamoDB Streams request's is the stream it names
  (``StreamArn``, or the stream of a ``ShardIterator``), ``.../table/NAME/stream/LABEL``;
- it names CloudWatch actions after the signing name, ``monitoring:PutMetricData``; here
  they are ``cloudwatch:PutMetricData``, as in AWS (which has no resource-level permissions
  for it: ``*`` is right).

Every enforced decision is written to the log as ``ddbcdc-iam <allowed|denied> <access key>
<action> <resource>``, for the tests to read.

    python tests/iam_moto.py -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import sys
from typing import Any

from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.iam.access_control import IAMRequest
from moto.server import main

_check = IAMRequest.check_action_permitted


def _table_resource(self: Any) -> str:
    params = getattr(self, "params", None) or {}
    table = params.get("TableName")
    if not isinstance(table, str) or not table:
        return "*"
    arn = f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{table}"
    index = params.get("IndexName")
    return f"{arn}/index/{index}" if isinstance(index, str) and index else arn


def _stream_resource(self: Any) -> str:
    arn = self._get_param("StreamArn")
    iterator = self._get_param("ShardIterator")
    if not arn and isinstance(iterator, str):
        arn = iterator.split("|", 1)[0]  # moto's iterators begin with their stream's ARN
    return arn if isinstance(arn, str) and arn else "*"


def _checked(self: Any, resource: str) -> None:
    service, _, name = self._action.partition(":")
    if service == "monitoring":
        self._action = f"cloudwatch:{name}"
    key = getattr(self._access_key, "_access_key_id", "-")
    try:
        _check(self, resource)
    except Exception:
        sys.stderr.write(f"ddbcdc-iam denied {key} {self._action} {resource}\n")
        raise
    sys.stderr.write(f"ddbcdc-iam allowed {key} {self._action} {resource}\n")


DynamoHandler._determine_resource = _table_resource  # type: ignore[attr-defined]
DynamoDBStreamsHandler._determine_resource = _stream_resource  # type: ignore[attr-defined]
IAMRequest.check_action_permitted = _checked  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])
