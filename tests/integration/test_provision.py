"""ddbcdc setup / teardown against real emulators: moto (DynamoDB) and kinesis-local."""

from __future__ import annotations

import os
import pty
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ddbcdc.aws import clients as aws
from ddbcdc.aws.provision import (
    LOCAL_DESTINATION_TAG,
    ProvisionOptions,
    is_local,
    set_up,
    tear_down,
)
from ddbcdc.settings import Settings

REPO = Path(__file__).resolve().parents[2]
KINESIS_LOCAL = REPO / "node_modules" / "kinesis-local"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(
    cmd: list[str], env: dict[str, str], ready: Callable[[], object]
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            ready()
            return proc
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                raise RuntimeError(f"{cmd[:2]} did not start") from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _settings(dynamodb_url: str | None, kinesis_url: str | None = None) -> Settings:
    return Settings(
        _env_file=None,
        aws_region="us-east-1",
        dynamodb_endpoint=dynamodb_url,
        kinesis_endpoint=kinesis_url,
    )


@pytest.fixture(scope="module")
def provision_credentials() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def provision_endpoints(provision_credentials: None) -> Iterator[dict[str, str]]:
    """This module's own moto and kinesis-local on free 127.0.0.1 ports, as DDBCDC_* env."""
    moto_url = f"http://127.0.0.1:{_free_port()}"
    moto = _start(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", moto_url.rsplit(":", 1)[1]],
        dict(os.environ),
        lambda: urllib.request.urlopen(f"{moto_url}/moto-api/", timeout=1).close(),
    )
    plain, tls = _free_port(), _free_port()
    env = {
        **os.environ,
        "KINESIS_MOCK_PLAIN_PORT": str(plain),
        "KINESIS_MOCK_TLS_PORT": str(tls),
        "KINESIS_MOCK_CERT_PATH": str(KINESIS_LOCAL / "server.json"),
        "LOG_LEVEL": "WARN",
        "CREATE_STREAM_DURATION": "50ms",
        "DELETE_STREAM_DURATION": "50ms",
    }
    kinesis_url = f"http://127.0.0.1:{plain}"
    probe = aws.client("kinesis", _settings(moto_url, kinesis_url), max_attempts=1)
    try:
        kinesis = _start(["node", str(KINESIS_LOCAL / "main.js")], env, probe.list_streams)
    except BaseException:
        _stop(moto)
        raise
    yield {"DDBCDC_DYNAMODB_ENDPOINT": moto_url, "DDBCDC_KINESIS_ENDPOINT": kinesis_url}
    _stop(kinesis)
    _stop(moto)


@pytest.fixture
def clients(provision_endpoints: dict[str, str]) -> tuple[Any, Any]:
    settings = _settings(
        provision_endpoints["DDBCDC_DYNAMODB_ENDPOINT"],
        provision_endpoints["DDBCDC_KINESIS_ENDPOINT"],
    )
    return aws.client("dynamodb", settings), aws.client("kinesis", settings)


def _cli(args: list[str], endpoints: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **CREDENTIALS, **endpoints, "AWS_REGION": "us-east-1"}
    return subprocess.run(
        [sys.executable, "-m", "ddbcdc.cli", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"customers-{suffix}", f"ddbcdc-{suffix}"


def _exists(call: Callable[[], object]) -> bool:
    try:
        call()
    except Exception as exc:
        if "ResourceNotFoundException" in str(exc):
            return False
        raise
    return True


def test_setup_twice_then_teardown(
    provision_endpoints: dict[str, str], clients: tuple[Any, Any], tmp_path: Path
) -> None:
    dynamodb, kinesis = clients
    table, stream = _names()
    target = ["--table", table, "--stream", stream]
    first = _cli(["setup", *target, "--shards", "3"], provision_endpoints, tmp_path)
    assert first.returncode == 0, first.stderr
    for line in (
        f"stream {stream}: created (3 shards)",
        f"table {table}: created",
        f"dynamodb-stream {table}: enabled",
        f"tag {LOCAL_DESTINATION_TAG}: created",
    ):
        assert line in first.stderr
    result = dict(line.split("=", 1) for line in first.stdout.splitlines())
    assert result["stream_arn"].endswith(f":stream/{stream}") and result["mode"] == "local"
    assert result["table_name"] == table

    described = dynamodb.describe_table(TableName=table)["Table"]
    assert described["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    tags = dynamodb.list_tags_of_resource(ResourceArn=described["TableArn"])["Tags"]
    assert {"Key": LOCAL_DESTINATION_TAG, "Value": result["stream_arn"]} in tags
    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "ACTIVE" and summary["OpenShardCount"] == 3

    second = _cli(["setup", *target], provision_endpoints, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stderr and "enabled" not in second.stderr
    for line in (
        f"stream {stream}: existed",
        f"table {table}: existed",
        f"dynamodb-stream {table}: existed",
        f"tag {LOCAL_DESTINATION_TAG}: existed",
    ):
        assert line in second.stderr
    assert second.stdout == first.stdout

    refused = _cli(["teardown", *target], provision_endpoints, tmp_path)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert _exists(lambda: dynamodb.describe_table(TableName=table))

    gone = _cli(["teardown", *target, "--yes"], provision_endpoints, tmp_path)
    assert gone.returncode == 0, gone.stderr
    for line in (
        f"tag {LOCAL_DESTINATION_TAG}: removed",
        f"table {table}: removed",
        f"stream {stream}: removed",
    ):
        assert line in gone.stderr
    assert not _exists(lambda: dynamodb.describe_table(TableName=table))
    assert not _exists(lambda: kinesis.describe_stream_summary(StreamName=stream))

    again = _cli(["teardown", *target, "--yes"], provision_endpoints, tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"table {table}: missing" in again.stderr and f"stream {stream}: missing" in again.stderr


def test_set_up_repairs_a_half_wired_table(clients: tuple[Any, Any]) -> None:
    dynamodb, kinesis = clients
    table, stream = _names()
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    arn = dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "userid", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "userid", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )["TableDescription"]["TableArn"]
    dynamodb.tag_resource(ResourceArn=arn, Tags=[{"Key": LOCAL_DESTINATION_TAG, "Value": "old"}])
    steps: list[str] = []
    options = ProvisionOptions(table=table, stream=stream, local=True, timeout=30)
    result = set_up(dynamodb, kinesis, options, on_step=lambda s: steps.append(str(s)))
    assert [s.split(":")[0] + ":" + s.split(": ")[1].split(" ")[0] for s in steps] == [
        f"stream {stream}:existed",
        f"table {table}:existed",
        f"dynamodb-stream {table}:enabled",
        "tag ddbcdc:updated",
    ]
    spec = dynamodb.describe_table(TableName=table)["Table"]["StreamSpecification"]
    assert spec["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    tags = dynamodb.list_tags_of_resource(ResourceArn=arn)["Tags"]
    assert {"Key": LOCAL_DESTINATION_TAG, "Value": result.stream_arn} in tags
    removed = tear_down(dynamodb, kinesis, options)
    assert [(s.resource, s.action) for s in removed] == [
        ("tag", "removed"),
        ("table", "removed"),
        ("stream", "removed"),
    ]


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        (None, False),
        ("http://127.0.0.1:4566", True),
        ("http://localhost:8000", True),
        ("http://[::1]:8000", True),
        ("https://dynamodb.us-east-1.amazonaws.com", False),
    ],
)
def test_local_stack_is_recognised_by_a_loopback_endpoint(
    endpoint: str | None, local: bool
) -> None:
    assert is_local(_settings(endpoint)) is local


def test_teardown_asks_about_what_it_deletes(
    provision_endpoints: dict[str, str], clients: tuple[Any, Any], tmp_path: Path
) -> None:
    """On a terminal the question names the Kinesis stream only when teardown deletes one."""
    dynamodb, _ = clients
    table, stream = _names()
    target = ["--table", table, "--stream", stream]
    streams = {**provision_endpoints, "DDBCDC_SOURCE": "dynamodb-streams"}
    assert _cli(["setup", *target], streams, tmp_path).returncode == 0
    for endpoints, names_stream in ((streams, False), (provision_endpoints, True)):
        primary, secondary = pty.openpty()
        env = {**os.environ, **CREDENTIALS, **endpoints, "AWS_REGION": "us-east-1"}
        with subprocess.Popen(
            [sys.executable, "-m", "ddbcdc.cli", "teardown", *target],
            env=env,
            cwd=tmp_path,
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            os.write(primary, b"n\n")
            out, err = proc.communicate(timeout=60)
        os.close(primary)
        os.close(secondary)
        assert proc.returncode == 1 and "nothing deleted" in err, err
        assert f"Delete DynamoDB table {table!r}" in out
        assert (f"Kinesis stream {stream!r}" in out) is names_stream, out
    assert _exists(lambda: dynamodb.describe_table(TableName=table))
    gone = _cli(["teardown", *target, "--yes"], streams, tmp_path)
    assert gone.returncode == 0 and "stream" not in gone.stderr, gone.stderr


def test_setup_keeps_a_stream_of_another_view_type(
    provision_endpoints: dict[str, str], clients: tuple[Any, Any], tmp_path: Path
) -> None:
    """Refused in one line naming the view type; the table's stream is left as it was."""
    dynamodb, _ = clients
    table, stream = _names()
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "userid", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "userid", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
    )
    streams = {**provision_endpoints, "DDBCDC_SOURCE": "dynamodb-streams"}
    for endpoints in (streams, provision_endpoints):
        refused = _cli(["setup", "--table", table, "--stream", stream], endpoints, tmp_path)
        assert refused.returncode == 2, refused.stderr
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith("ddbcdc setup: ") and "streams KEYS_ONLY" in last, last
        described = dynamodb.describe_table(TableName=table)["Table"]
        assert described["StreamSpecification"] == {
            "StreamEnabled": True,
            "StreamViewType": "KEYS_ONLY",
        }
    dynamodb.delete_table(TableName=table)
