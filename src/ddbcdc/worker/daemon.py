"""Start the KCL MultiLangDaemon (Java) with ddbcdc's shard processor, and stop it cleanly.

``ddbcdc worker`` renders the daemon's properties (:mod:`ddbcdc.worker.properties`), checks
that Java 17+ and amazon-kclpy's jars are present, then runs::

    java -cp <kclpy jars> software.amazon.kinesis.multilang.MultiLangDaemon \\
        --properties-file <rendered> --log-configuration workers/logback.xml

as a child (both files are installed with the package: :func:`ddbcdc.resources.workers_file`;
for a DynamoDB stream, ``StreamsDaemon`` with the adapter's jar: :mod:`ddbcdc.worker.streams`),
forwarding SIGTERM/SIGINT to it as SIGTERM. The daemon's shutdown hook asks every shard
processor to checkpoint (KCL graceful shutdown) and waits ``shutdownGraceMillis``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import FrameType

from ddbcdc.children import signal_when_parent_dies
from ddbcdc.errors import ConfigurationError
from ddbcdc.resources import workers_file
from ddbcdc.settings import Settings
from ddbcdc.worker.metrics import MULTIPROC_ENV
from ddbcdc.worker.properties import WorkerOptions

__all__ = [
    "DAEMON_CLASS",
    "PROCESSOR_MODULE",
    "DaemonProcess",
    "check_java",
    "daemon_command",
    "daemon_environment",
    "find_jars",
    "processor_command",
]

log = logging.getLogger(__name__)

DAEMON_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"
#: What the daemon runs once per shard it holds (``python -P -m ddbcdc.worker.entry``).
PROCESSOR_MODULE = "ddbcdc.worker.entry"
MIN_JAVA = 17
_JAVA_HINT = "install Java 17 or newer (Debian: apt-get install openjdk-17-jre-headless)"


def find_jars() -> list[Path]:
    """The KCL jars amazon-kclpy downloaded at install time, with a clear error if absent."""
    try:
        jar_dir = resources.files("amazon_kclpy") / "jars"
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "amazon-kclpy (a dependency of ddbcdc) is not installed: reinstall ddbcdc"
        ) from exc
    found = jar_dir.iterdir() if jar_dir.is_dir() else iter(())
    jars = sorted(Path(str(j)) for j in found if j.name.endswith(".jar"))
    if not any(j.name.startswith("amazon-kinesis-client-multilang") for j in jars):
        raise ConfigurationError(
            f"amazon-kclpy has no KCL jars in {jar_dir}: reinstall it with Maven Central "
            "reachable (pip install --force-reinstall --no-binary amazon-kclpy amazon-kclpy)"
        )
    return jars


def check_java(java: str | None = None) -> str:
    """Path of a Java >= 17 (``java`` given, else $JAVA_HOME/bin/java, else PATH)."""
    candidate = java
    if candidate is None and os.environ.get("JAVA_HOME"):
        candidate = str(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    resolved = shutil.which(candidate or "java")
    if resolved is None:
        raise ConfigurationError(f"java not found ({candidate or 'PATH'}): {_JAVA_HINT}")
    result = subprocess.run(
        [resolved, "-version"], capture_output=True, text=True, timeout=60, check=False
    )
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if result.returncode != 0 or match is None:
        raise ConfigurationError(f"could not run {resolved} -version: {_JAVA_HINT}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise ConfigurationError(f"{resolved} is Java {major}; KCL 3.x needs {MIN_JAVA}+")
    return resolved


def processor_command() -> str:
    """The ``executableName``: this Python running :data:`PROCESSOR_MODULE`.

    An installed entry point, so a worker host needs only the package. ``-P`` keeps the
    working directory off ``sys.path``: nothing in the folder the worker runs from can
    shadow a module of the shard processor.
    """
    if " " in sys.executable:
        raise ConfigurationError(
            "the KCL daemon splits executableName on spaces: install ddbcdc into a Python "
            f"or virtualenv whose path has none ({sys.executable!r})"
        )
    return f"{sys.executable} -P -m {PROCESSOR_MODULE}"


def daemon_command(
    java: str, jars: list[Path], properties_file: Path, *, launcher: Path | None = None
) -> list[str]:
    """The java command line that starts the MultiLangDaemon, or with ``launcher`` (the
    folder of the compiled :data:`ddbcdc.worker.streams.LAUNCHER_CLASS`) the DynamoDB
    Streams daemon."""
    from ddbcdc.worker.streams import LAUNCHER_CLASS

    classpath = [str(j) for j in jars] + ([str(launcher)] if launcher is not None else [])
    return [
        java,
        # Emulators speak JSON only; the SDK would otherwise use CBOR for Kinesis.
        "-Daws.cborEnabled=false",
        "-cp",
        os.pathsep.join(classpath),
        LAUNCHER_CLASS if launcher is not None else DAEMON_CLASS,
        "--properties-file",
        str(properties_file),
        "--log-configuration",
        str(workers_file("logback.xml")),
    ]


def daemon_environment(
    settings: Settings,
    base: Mapping[str, str],
    *,
    multiproc_dir: Path,
    application_name: str,
    options: WorkerOptions | None = None,
) -> dict[str, str]:
    """Environment of the daemon and, through it, of every shard processor.

    For a DynamoDB stream the processors are told its table (in the stream's ARN): its
    records, as the adapter hands them over, do not name it.
    """
    env = dict(base)
    env[MULTIPROC_ENV] = str(multiproc_dir)
    env["DDBCDC_APPLICATION_NAME"] = application_name
    if options is not None and options.source == "dynamodb-streams":
        from ddbcdc.decode.envelope import table_from_arn

        env["DDBCDC_SOURCE"] = options.source
        env["DDBCDC_SOURCE_TABLE"] = table_from_arn(options.stream)
    env["DATABASE_URL"] = settings.require_database_url()
    env.setdefault("AWS_REGION", settings.aws_region)
    env["AWS_CBOR_DISABLE"] = "true"
    if settings.cloudwatch_endpoint:
        env["AWS_ENDPOINT_URL_CLOUDWATCH"] = settings.cloudwatch_endpoint
    env["PYTHONUNBUFFERED"] = "1"
    return env


class DaemonProcess:
    """The running MultiLangDaemon: start it, watch it, stop it gracefully.

    Args:
        command: from :func:`daemon_command`.
        env: from :func:`daemon_environment`.
        grace_s: after a stop signal, how long to wait for the daemon before SIGKILL.
        pass_fds: descriptors the daemon inherits (the work folder's lock).
    """

    def __init__(
        self,
        command: list[str],
        env: Mapping[str, str],
        *,
        grace_s: float,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.command = command
        self.env = dict(env)
        self.grace_s = grace_s
        self.pass_fds = pass_fds
        self.child: subprocess.Popen[bytes] | None = None
        self._stop_at: float | None = None

    def start(self) -> None:
        """Start the daemon (same process group: a terminal's Ctrl-C reaches it too).

        On Linux the daemon also gets SIGTERM if this process dies without forwarding one
        (e.g. SIGKILL), so it never outlives ``ddbcdc worker`` holding leases. Call this
        before starting threads: the hook runs between fork and exec.
        """
        self.child = subprocess.Popen(
            self.command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            pass_fds=self.pass_fds,
            preexec_fn=signal_when_parent_dies(signal.SIGTERM),
        )
        log.info("KCL daemon started pid=%d", self.child.pid)

    def alive(self) -> bool:
        """Whether the daemon is still running."""
        return self.child is not None and self.child.poll() is None

    def request_stop(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        """Forward one SIGTERM to the daemon; its shutdown hook checkpoints every shard."""
        if self._stop_at is not None or self.child is None:
            return
        self._stop_at = time.monotonic() + self.grace_s
        log.info("signal %s: asking the KCL daemon to shut down gracefully", signum)
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        """Wait for the daemon, forwarding SIGTERM/SIGINT; its exit status.

        0 when it stopped because we asked it to (the JVM reports 143 after running its
        shutdown hook); 128+n when a signal n we did not forward killed it.
        """
        assert self.child is not None, "start() first"
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while True:
                try:
                    status = self.child.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    if self._stop_at is not None and time.monotonic() > self._stop_at:
                        log.error("KCL daemon still running after %.0fs: killing it", self.grace_s)
                        self.child.kill()
                    continue
                if self._stop_at is not None and status in (0, 130, 143):
                    return 0
                code = status if status >= 0 else 128 - status
                # The MultiLangDaemon exits 1 when a shard processor dies or fails: the whole
                # worker stops, and its supervisor starts it again (same --worker-id: it
                # takes its own leases back at once).
                log.error(
                    "KCL daemon exited unasked status=%d: a shard processor died or failed, "
                    "or the daemon could not run; restart the worker with the same --worker-id",
                    code,
                )
                return code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
