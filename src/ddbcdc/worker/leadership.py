"""The KCL leader lock a worker's previous run left behind, given back as the worker starts.

KCL 3.x elects one leader per application with a DynamoDB lock (``<application>-
CoordinatorState``, item ``Leader``), and only the leader reassigns leases. The lock lasts two
minutes and KCL 3.1.3 offers no way to shorten it: when the leader is killed, no lease of any
dead worker moves until another worker can take the lock, even if the leader comes back at
once. A restarted worker cannot take it either (the lock names its old run, not its new one).

Worker ids are unique among running workers (the supervision contract), so a lock that names
this worker's id as it starts belongs to a run of it that has ended: the worker deletes it
before its daemon starts, on the condition that nobody has renewed it since it was read, and
the next leader election (its own, or another worker's) succeeds at once.
"""

from __future__ import annotations

import logging
from typing import Any

from ddbcdc.aws.errors import AwsError, AwsNotFoundError

__all__ = ["LEADER_KEY", "release_stale_leader_lock"]

log = logging.getLogger(__name__)

LEADER_KEY = "Leader"


def release_stale_leader_lock(client: Any, application: str, worker_id: str) -> bool:
    """Delete the leader lock if it names ``worker_id``; whether it was deleted.

    Args:
        client: a DynamoDB client of :func:`ddbcdc.aws.client`.
        application: the KCL application name.
        worker_id: the id this worker is about to start under.
    """
    table = f"{application}-CoordinatorState"
    key = {"key": {"S": LEADER_KEY}}
    try:
        item = client.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
    except AwsNotFoundError:
        return False
    if not item or item.get("ownerName", {}).get("S") != worker_id:
        return False
    version = item.get("recordVersionNumber", {}).get("S", "")
    try:
        client.delete_item(
            TableName=table,
            Key=key,
            ConditionExpression="ownerName = :me AND recordVersionNumber = :version",
            ExpressionAttributeValues={":me": {"S": worker_id}, ":version": {"S": version}},
        )
    except AwsError as exc:
        if exc.code != "ConditionalCheckFailedException":
            raise
        return False  # renewed meanwhile: a live run holds it after all
    log.warning(
        "released the KCL leader lock left by an earlier run application=%s worker_id=%s",
        application,
        worker_id,
    )
    return True
