"""kinesis-local (the npm build of kinesis-mock): Kinesis with HTTP/2, on loopback ports.

kinesis-local binds every interface; ddbcdc only ever talks to it through 127.0.0.1. Its
plain port speaks HTTP/1.1 and HTTP/2 without TLS (h2c, which the KCL's Java SDK uses for
``http://`` endpoints); its TLS port uses the self-signed ``server.json`` of the package.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ddbcdc.errors import ConfigurationError
from ddbcdc.local.awsjson import JsonApiClient
from ddbcdc.local.kinesis_package import find_kinesis_local
from ddbcdc.local.postgres import free_port
from ddbcdc.local.processes import ManagedProcess

__all__ = ["kinesis_local_env", "launch_kinesis", "wait_for_kinesis"]


def kinesis_local_env(package: Path, *, plain_port: int, tls_port: int) -> dict[str, str]:
    """The environment kinesis-local runs with: our ports, short delays, quiet logs."""
    env = dict(os.environ)
    env.update(
        KINESIS_MOCK_PLAIN_PORT=str(plain_port),
        KINESIS_MOCK_TLS_PORT=str(tls_port),
        # main.js opens server.json relative to cwd unless told where it is.
        KINESIS_MOCK_CERT_PATH=str(package / "server.json"),
        SHOULD_PERSIST_DATA="false",
        LOAD_DATA_IF_EXISTS="false",
        LOG_LEVEL="WARN",
        SHARD_LIMIT="1000",
        ON_DEMAND_STREAM_COUNT_LIMIT="100",
        AWS_REGION=env.get("AWS_REGION", "us-east-1"),
    )
    for setting in (
        "CREATE_STREAM_DURATION",
        "DELETE_STREAM_DURATION",
        "REGISTER_STREAM_CONSUMER_DURATION",
        "START_STREAM_ENCRYPTION_DURATION",
        "STOP_STREAM_ENCRYPTION_DURATION",
        "DEREGISTER_STREAM_CONSUMER_DURATION",
        "MERGE_SHARDS_DURATION",
        "SPLIT_SHARD_DURATION",
        "UPDATE_SHARD_COUNT_DURATION",
        "UPDATE_STREAM_MODE_DURATION",
    ):
        env[setting] = "50ms"
    return env


def launch_kinesis(*, log_path: Path) -> tuple[ManagedProcess, str, str]:
    """Start kinesis-local on free ports without waiting.

    Call it from a thread that outlives the process (the child gets SIGKILL when the thread
    that started it ends).

    Returns:
        The process, the plain (HTTP/1.1 and h2c) URL and the TLS URL, both on 127.0.0.1.
    """
    node = shutil.which("node")
    if node is None:
        raise ConfigurationError(
            "Node.js is required for kinesis-local (Debian: apt-get install nodejs)"
        )
    package = find_kinesis_local()  # installs it on first use (kinesis_package)
    plain_port, tls_port = free_port(), free_port()
    while tls_port == plain_port:
        tls_port = free_port()
    process = ManagedProcess(
        "kinesis",
        [node, str(package / "main.js")],
        log_path=log_path,
        env=kinesis_local_env(package, plain_port=plain_port, tls_port=tls_port),
        cwd=package,
        stop_grace=2.0,  # it may ignore SIGTERM
    ).start()
    return process, f"http://127.0.0.1:{plain_port}", f"https://127.0.0.1:{tls_port}"


def wait_for_kinesis(
    process: ManagedProcess, endpoint: str, *, region: str = "us-east-1", timeout: float = 60.0
) -> None:
    """Block until kinesis-local answers ListStreams on its plain port."""
    probe = JsonApiClient("kinesis", endpoint, region=region, timeout=2.0)

    def answers() -> bool:
        probe.call("ListStreams", {})
        return True

    try:
        process.wait_ready(answers, timeout=timeout)
    finally:
        probe.close()
