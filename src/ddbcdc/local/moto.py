"""moto in server mode: DynamoDB, DynamoDB Streams, CloudWatch and S3 on one loopback port.

moto runs in its own process (``python -m moto.server``) so it gets a core of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ddbcdc.local.awsjson import JsonApiClient
from ddbcdc.local.postgres import free_port
from ddbcdc.local.processes import ManagedProcess

__all__ = ["launch_moto", "wait_for_moto"]


def launch_moto(*, log_path: Path, port: int = 0) -> tuple[ManagedProcess, str]:
    """Start moto's server on 127.0.0.1 without waiting; returns the process and its URL.

    Call it from a thread that outlives the process (the child gets SIGKILL when the thread
    that started it ends).
    """
    port = port or free_port()
    process = ManagedProcess(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        log_path=log_path,
    ).start()
    return process, f"http://127.0.0.1:{port}"


def wait_for_moto(
    process: ManagedProcess, endpoint: str, *, region: str = "us-east-1", timeout: float = 60.0
) -> None:
    """Block until moto's DynamoDB answers ListTables."""
    probe = JsonApiClient("dynamodb", endpoint, region=region, timeout=2.0)

    def answers() -> bool:
        probe.call("ListTables", {"Limit": 1})
        return True

    try:
        process.wait_ready(answers, timeout=timeout)
    finally:
        probe.close()
