"""``ddbcdc worker``'s launcher: properties, Java and jar checks, environment, signals."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest

from ddbcdc.errors import ConfigurationError
from ddbcdc.resources import workers_file
from ddbcdc.settings import Settings
from ddbcdc.worker import daemon
from ddbcdc.worker.properties import WorkerOptions, new_worker_id, render_properties

SECRET_URL = "postgresql+psycopg://app:s3cret-pw@127.0.0.1:5432/db"


def settings(**values: object) -> Settings:
    base: dict[str, object] = {
        "database_url": SECRET_URL,
        "stream_name": "orders-cdc",
        "kinesis_endpoint": "http://127.0.0.1:4568",
        "dynamodb_endpoint": "http://127.0.0.1:5000",
        "cloudwatch_endpoint": "http://127.0.0.1:5000",
    }
    base.update(values)
    return Settings(**base)  # type: ignore[arg-type]


def parse(text: str) -> dict[str, str]:
    props = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def test_properties_carry_kcl_313_keys_and_no_secret() -> None:
    options = WorkerOptions.from_settings(settings(), application_name="app-1", worker_id="host-a")
    text = render_properties(options, executable="/venv/bin/python /w/rp.py")
    props = parse(text)
    assert props["executableName"] == "/venv/bin/python /w/rp.py"
    assert props["streamName"] == "orders-cdc"
    assert "streamArn" not in props
    assert props["applicationName"] == "app-1"
    assert props["workerId"] == "host-a"
    assert props["regionName"] == "us-east-1"
    assert props["initialPositionInStream"] == "TRIM_HORIZON"
    assert props["retrievalMode"] == "POLLING"
    assert props["metricsLevel"] == "NONE"
    assert props["kinesisEndpoint"] == "http://127.0.0.1:4568"
    assert props["dynamoDBEndpoint"] == "http://127.0.0.1:5000"
    assert props["maxRecords"] == "1000"
    assert props["idleTimeBetweenReadsInMillis"] == "250"
    assert props["failoverTimeMillis"] == "10000"
    assert props["leaseAssignmentIntervalMillis"] == "2000"
    assert props["workerMetricsReporterFreqInMillis"] == "10000"
    assert props["shardSyncIntervalMillis"] == "1000"
    assert props["shutdownGraceMillis"] == "20000"
    assert props["isGracefulLeaseHandoffEnabled"] == "false"
    assert props["AwsCredentialsProvider"] == "DefaultCredentialsProvider"
    assert "s3cret" not in text and "postgresql" not in text
    assert "$" not in text  # every placeholder filled


def test_stream_arn_and_overrides() -> None:
    arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders"
    options = WorkerOptions.from_settings(
        settings(stream_arn=arn, aws_region="eu-west-1", kinesis_endpoint=None),
        stream=None,
        initial_position="latest",
    )
    props = parse(render_properties(options, executable="py rp.py"))
    assert props["streamArn"] == arn
    assert "streamName" not in props
    assert props["initialPositionInStream"] == "LATEST"
    assert props["regionName"] == "eu-west-1"
    assert "kinesisEndpoint" not in props
    assert "workerId" not in props


def test_no_stream_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="--stream"):
        WorkerOptions.from_settings(settings(stream_name=None))


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4568", "http://a b", "ftp://x"])
def test_endpoints_must_be_full_urls(endpoint: str) -> None:
    options = WorkerOptions.from_settings(settings(kinesis_endpoint=endpoint))
    with pytest.raises(ConfigurationError, match="full http"):
        render_properties(options, executable="py rp.py")


def test_multiline_values_are_refused() -> None:
    options = WorkerOptions.from_settings(settings(), application_name="a\nexecutableName=x")
    with pytest.raises(ConfigurationError, match="single line"):
        render_properties(options, executable="py rp.py")


def fake_java(tmp_path: Path, version_line: str) -> str:
    path = tmp_path / "java"
    path.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_java_17_or_newer_is_accepted(tmp_path: Path) -> None:
    java = fake_java(tmp_path, 'openjdk version "21.0.2" 2024-01-16')
    assert daemon.check_java(java) == java


@pytest.mark.parametrize("line", ['openjdk version "11.0.22"', 'java version "1.8.0_392"'])
def test_old_java_is_refused_with_the_version(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigurationError, match=r"Java (11|8); KCL 3.x needs 17"):
        daemon.check_java(fake_java(tmp_path, line))


def test_missing_java_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="openjdk-17"):
        daemon.check_java(str(tmp_path / "nope"))


def test_the_installed_jars_hold_the_multilang_daemon() -> None:
    names = [j.name for j in daemon.find_jars()]
    assert "amazon-kinesis-client-multilang-3.1.3.jar" in names
    assert "amazon-kinesis-client-3.1.3.jar" in names


def test_command_line_and_processor_command() -> None:
    command = daemon.daemon_command("/usr/bin/java", daemon.find_jars(), Path("/t/kcl.properties"))
    assert command[0] == "/usr/bin/java"
    assert "-Daws.cborEnabled=false" in command
    assert command[command.index("-cp") + 1].count(os.pathsep) > 10
    assert command[-5:-2] == [daemon.DAEMON_CLASS, "--properties-file", "/t/kcl.properties"]
    assert command[-1] == str(workers_file("logback.xml"))
    # The installed entry point, run by this Python without the working directory on sys.path
    # (the daemon splits the command on spaces).
    assert daemon.processor_command().split(" ") == [
        sys.executable,
        "-P",
        "-m",
        "ddbcdc.worker.entry",
    ]


def test_environment_passes_the_secret_only_there(tmp_path: Path) -> None:
    env = daemon.daemon_environment(
        settings(), {"PATH": "/bin"}, multiproc_dir=tmp_path, application_name="app-1"
    )
    assert env["DATABASE_URL"] == SECRET_URL
    assert env["DDBCDC_APPLICATION_NAME"] == "app-1"
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
    assert env["AWS_ENDPOINT_URL_CLOUDWATCH"] == "http://127.0.0.1:5000"
    assert env["AWS_CBOR_DISABLE"] == "true"
    assert env["PATH"] == "/bin"


def test_environment_without_database_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        daemon.daemon_environment(
            settings(database_url=None), {}, multiproc_dir=tmp_path, application_name="a"
        )


def child(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


def test_stop_signal_is_forwarded_once_and_a_requested_stop_exits_0(tmp_path: Path) -> None:
    marker = tmp_path / "terms"
    command = child(
        tmp_path,
        f"""
        import signal, sys, time
        def term(*_):
            with open({str(marker)!r}, "a") as f:
                f.write("TERM\\n")
            time.sleep(0.3)
            sys.exit(143)  # what the JVM reports after its shutdown hook
        signal.signal(signal.SIGTERM, term)
        open({str(marker)!r}, "w").close()
        while True:
            time.sleep(0.05)
        """,
    )
    process = daemon.DaemonProcess(command, dict(os.environ), grace_s=20)
    process.start()
    while not marker.exists():
        time.sleep(0.05)
    threading.Timer(0.2, lambda: [os.kill(os.getpid(), signal.SIGTERM) for _ in range(2)]).start()
    assert process.wait() == 0
    assert marker.read_text() == "TERM\n"
    assert not process.alive()


def test_daemon_ignoring_the_stop_is_killed_after_the_grace(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    command = child(
        tmp_path,
        f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").close()
        time.sleep(60)
        """,
    )
    process = daemon.DaemonProcess(command, dict(os.environ), grace_s=1)
    process.start()
    while not ready.exists():
        time.sleep(0.05)
    threading.Timer(0.1, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    assert process.wait() == 128 + signal.SIGKILL
    assert time.monotonic() - started < 10


def test_daemon_failing_on_its_own_reports_its_status(tmp_path: Path) -> None:
    process = daemon.DaemonProcess(
        child(tmp_path, "import sys; sys.exit(3)"), dict(os.environ), grace_s=5
    )
    process.start()
    assert process.wait() == 3


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
def test_daemon_gets_sigterm_when_the_launcher_is_killed(tmp_path: Path) -> None:
    termed, ready = tmp_path / "termed", tmp_path / "ready"
    grandchild = child(
        tmp_path,
        f"""
        import os, signal, sys, time
        def term(*_):
            open({str(termed)!r}, "w").close()
            sys.exit(0)
        signal.signal(signal.SIGTERM, term)
        with open({str(ready)!r}, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
        """,
    )
    launcher = tmp_path / "launcher.py"
    launcher.write_text(
        "import os, sys\n"
        "from ddbcdc.worker.daemon import DaemonProcess\n"
        f"p = DaemonProcess({grandchild!r}, dict(os.environ), grace_s=5)\n"
        "p.start()\n"
        "p.wait()\n"
    )
    proc = subprocess.Popen([sys.executable, str(launcher)])
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists()
    proc.kill()
    proc.wait()
    while not termed.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not termed.exists():
        os.kill(int(ready.read_text()), signal.SIGKILL)
    assert termed.exists()


def test_the_handoff_switch_is_a_property_the_bundled_kcl_reads() -> None:
    """The daemon ignores unknown keys silently: the name must be a setter of its config."""
    [jar] = [j for j in daemon.find_jars() if j.name.startswith("amazon-kinesis-client-multilang")]
    with zipfile.ZipFile(jar) as archive:
        bean = archive.read(
            "software/amazon/kinesis/multilang/config/GracefulLeaseHandoffConfigBean.class"
        )
    assert b"setIsGracefulLeaseHandoffEnabled" in bean


def test_a_worker_without_an_id_gets_a_fresh_one() -> None:
    first, second = new_worker_id(), new_worker_id()
    assert first != second
    assert re.fullmatch(r"[A-Za-z0-9._-]+-[0-9a-f]{8}", first)
