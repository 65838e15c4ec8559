"""``ddbcdc worker`` on a DynamoDB stream: options, properties, command, environment, the
adapter jar's checks and the launcher's compilation on a Java without a compiler."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path
from typing import IO

import pytest

from ddbcdc.errors import ConfigurationError
from ddbcdc.settings import Settings
from ddbcdc.worker import daemon, streams
from ddbcdc.worker.properties import WorkerOptions, render_properties

ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2025-11-24T16:00:00.000"
SECRET_URL = "postgresql+psycopg://app:s3cret-pw@127.0.0.1:5432/db"


def settings(**values: object) -> Settings:
    base: dict[str, object] = {
        "database_url": SECRET_URL,
        "source": "dynamodb-streams",
        "dynamodb_endpoint": "http://127.0.0.1:5000",
        "dynamodbstreams_endpoint": "http://127.0.0.1:5001",
        "kinesis_endpoint": "http://127.0.0.1:4568",
    }
    base.update(values)
    return Settings(**base)  # type: ignore[arg-type]


def parse(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def test_properties_name_the_dynamodb_stream_and_its_endpoint_and_nothing_of_kinesis() -> None:
    options = WorkerOptions.from_settings(settings(), stream=ARN, worker_id="w1")
    props = parse(render_properties(options, executable="/venv/bin/python /w/rp.py"))
    assert props["dynamoDBStreamsArn"] == ARN
    assert props["dynamoDBStreamsEndpoint"] == "http://127.0.0.1:5001"
    assert props["dynamoDBEndpoint"] == "http://127.0.0.1:5000"
    assert "kinesisEndpoint" not in props and "streamName" not in props
    assert "streamArn" not in props
    assert props["retrievalMode"] == "POLLING"
    assert props["initialPositionInStream"] == "TRIM_HORIZON"
    assert "s3cret" not in str(props)


@pytest.mark.parametrize(
    ("values", "stream", "message"),
    [
        ({}, "orders-cdc", "is not a DynamoDB stream ARN"),
        ({"retrieval_mode": "FANOUT"}, ARN, "no enhanced fan-out"),
        ({"initial_position_timestamp": "2025-01-01T00:00:00Z"}, ARN, "TRIM_HORIZON or LATEST"),
    ],
)
def test_what_a_dynamodb_stream_cannot_do_is_refused(
    values: dict[str, object], stream: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        WorkerOptions.from_settings(settings(**values), stream=stream)


def test_command_and_environment_run_the_launcher_for_the_stream_s_table(tmp_path: Path) -> None:
    options = WorkerOptions.from_settings(settings(), stream=ARN)
    jars = [tmp_path / "a.jar", tmp_path / "adapter.jar"]
    command = daemon.daemon_command("java", jars, tmp_path / "k.properties", launcher=tmp_path)
    classpath = command[command.index("-cp") + 1].split(":")
    assert classpath == [str(tmp_path / "a.jar"), str(tmp_path / "adapter.jar"), str(tmp_path)]
    assert command[command.index("-cp") + 2] == "StreamsDaemon"
    kinesis = daemon.daemon_command("java", jars, tmp_path / "k.properties")
    assert kinesis[kinesis.index("-cp") + 2] == daemon.DAEMON_CLASS
    env = daemon.daemon_environment(
        settings(), {}, multiproc_dir=tmp_path, application_name="app", options=options
    )
    assert env["DDBCDC_SOURCE"] == "dynamodb-streams"
    assert env["DDBCDC_SOURCE_TABLE"] == "orders"


def _opener(payload: bytes) -> object:
    def open_url(url: str) -> IO[bytes]:
        assert url == streams.ADAPTER.url
        return io.BytesIO(payload)

    return open_url


def test_a_download_that_is_not_the_published_jar_is_refused_and_not_kept(tmp_path: Path) -> None:
    assert streams.ADAPTER.url == (
        "https://repo1.maven.org/maven2/com/amazonaws/dynamodb-streams-kinesis-adapter/2.0.1/"
        "dynamodb-streams-kinesis-adapter-2.0.1.jar"
    )
    with pytest.raises(ConfigurationError, match=r"has SHA-256 \w+, expected 7113d35f"):
        streams.adapter_jar(settings(cache_dir=tmp_path), opener=_opener(b"not the jar"))  # type: ignore[arg-type]
    assert list((tmp_path / "jars").iterdir()) == []


def test_a_given_or_cached_copy_is_checked_too(tmp_path: Path) -> None:
    fake = tmp_path / "adapter.jar"
    fake.write_bytes(b"something else")
    with pytest.raises(ConfigurationError, match=r"DDBCDC_ADAPTER_JAR \S+ is not com\.amazonaws"):
        streams.adapter_jar(settings(adapter_jar=fake))
    with pytest.raises(ConfigurationError, match="is not a file"):
        streams.adapter_jar(settings(adapter_jar=tmp_path / "missing.jar"))
    cached = tmp_path / "cache" / "jars" / streams.ADAPTER.file_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"a corrupted download")
    with pytest.raises(ConfigurationError, match="SHA-256"):
        streams.adapter_jar(settings(cache_dir=tmp_path / "cache"), opener=_opener(b"again"))  # type: ignore[arg-type]
    assert not cached.exists()
    assert hashlib.sha256(b"").hexdigest() != streams.ADAPTER.sha256


def test_a_java_without_its_compiler_gets_a_clear_error(tmp_path: Path) -> None:
    java = shutil.which("java")
    assert java is not None
    # A real Java that cannot see jdk.compiler, as a jlink-built runtime image.
    limited = tmp_path / "java"
    limited.write_text(f'#!/bin/sh\nexec {java} --limit-modules java.base,java.logging "$@"\n')
    limited.chmod(0o755)
    with pytest.raises(ConfigurationError, match=r"has no jdk\.compiler module"):
        streams.compile_launcher(str(limited), [], settings(cache_dir=tmp_path / "cache"))
    assert not list((tmp_path / "cache" / "launcher").glob("*/StreamsDaemon.class"))
