"""pytest plugin: a moto server that enforces IAM (``tests/iam_moto.py``), users of it with
given policies, and switching its enforcement on and off.

Registered from tests/conftest.py. The server is module-scoped: enforcement is the server's
state, so each test module gets its own.
"""

from __future__ import annotations

import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from ddbcdc.local.moto import wait_for_moto
from ddbcdc.local.postgres import free_port
from ddbcdc.local.processes import ManagedProcess

ACCOUNT = "123456789012"  # moto's account
_LAUNCHER = Path(__file__).resolve().parent / "iam_moto.py"


class IamMoto:
    """The enforcing moto: its URL, its log, and clients with given keys."""

    def __init__(self, process: ManagedProcess, url: str) -> None:
        self.process, self.url = process, url

    def client(self, service: str, keys: dict[str, str]) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=keys["AccessKeyId"],
            aws_secret_access_key=keys["SecretAccessKey"],
        )

    def decisions(self, key: str) -> list[tuple[str, str, str]]:
        """(allowed|denied, action, resource) of every enforced request made with ``key``."""
        found = []
        for line in self.process.log_path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[0] == "ddbcdc-iam" and parts[2] == key:
                found.append((parts[1], parts[3], parts[4]))
        return found


@pytest.fixture(scope="module")
def iam_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamMoto]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("iam-moto") / "moto.log"
    argv = [sys.executable, str(_LAUNCHER), "-H", "127.0.0.1", "-p", str(port)]
    process = ManagedProcess("iam-moto", argv, log_path=log_path).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_moto(process, url)
        yield IamMoto(process, url)
    finally:
        process.stop()


def user_with_policy(moto: IamMoto, policy: str) -> dict[str, str]:
    """A new IAM user with ``policy`` as its only permissions, and its access key.

    Runs while moto still lets requests through unauthenticated; :func:`enforce` ends that.
    """
    iam = moto.client("iam", {"AccessKeyId": "setup", "SecretAccessKey": "setup"})
    name = f"ddbcdc-user-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="ddbcdc", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def enforce(moto: IamMoto, unauthenticated: float) -> None:
    """From now on moto checks every request (after ``unauthenticated`` more, or inf)."""
    request = urllib.request.Request(
        f"{moto.url}/moto-api/reset-auth",
        data=str(unauthenticated).encode(),
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
