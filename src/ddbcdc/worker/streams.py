"""What ``ddbcdc worker`` runs to read a DynamoDB stream: the adapter's jar and our launcher.

With ``DDBCDC_SOURCE=dynamodb-streams`` the KCL reads the table's DynamoDB stream through the
DynamoDB Streams Kinesis Adapter (``com.amazonaws:dynamodb-streams-kinesis-adapter`` 2.0.1,
Apache-2.0), whose scheduler handles shard lineage; ``workers/StreamsDaemon.java`` (installed
with the package: :func:`launcher_source`) builds that scheduler around the same multilang
record processors (one ddbcdc shard processor per shard) from the same properties file as the
MultiLangDaemon's.

- **The adapter jar** is downloaded from Maven Central on first use (``make install`` and
  ``ddbcdc worker --prepare`` do it ahead of time), checked against its SHA-256 and kept in
  the cache folder (``DDBCDC_CACHE_DIR``, default ``$XDG_CACHE_HOME/ddbcdc`` or
  ``~/.cache/ddbcdc``). ``DDBCDC_ADAPTER_JAR`` names a copy instead (checked the same way),
  for hosts that cannot reach Maven Central. Everything else it needs is among the jars
  amazon-kclpy bundles.
- **The launcher** is compiled once into the same cache, per source and jar set, with the
  compiler module of the Java that runs it (``java -m jdk.compiler/...``: Debian's
  openjdk-17-jre-headless has it, so does every JDK). A Java without ``jdk.compiler`` (many
  jlink-built container images) gets a clear error; its cache can instead be prepared on a
  host that has one (``ddbcdc worker --prepare``) and copied (the classes are Java 17
  bytecode).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ddbcdc.aws.retrieval import RetrievalMode
from ddbcdc.aws.streams import DYNAMODB_STREAM_ARN
from ddbcdc.errors import ConfigurationError
from ddbcdc.resources import workers_file
from ddbcdc.settings import Settings

__all__ = [
    "ADAPTER",
    "LAUNCHER_CLASS",
    "LAUNCHER_SOURCE",
    "MavenJar",
    "adapter_jar",
    "cache_dir",
    "check_source_options",
    "compile_launcher",
    "launcher_source",
    "prepare",
]

log = logging.getLogger(__name__)

LAUNCHER_SOURCE = "StreamsDaemon.java"
LAUNCHER_CLASS = "StreamsDaemon"
_CENTRAL = "https://repo1.maven.org/maven2"


@dataclass(frozen=True, slots=True)
class MavenJar:
    """One jar on Maven Central, pinned by its SHA-256."""

    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    @property
    def coordinates(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    @property
    def url(self) -> str:
        path = self.group.replace(".", "/")
        return f"{_CENTRAL}/{path}/{self.artifact}/{self.version}/{self.file_name}"


ADAPTER = MavenJar(
    group="com.amazonaws",
    artifact="dynamodb-streams-kinesis-adapter",
    version="2.0.1",
    sha256="7113d35ffdd787182395aa60dea5253d3fe5d0c8c31044d11d2aa555a6cdc680",
)


def check_source_options(settings: Settings, arn: str, start: str) -> RetrievalMode:
    """Refuse what a DynamoDB stream cannot do; its retrieval mode (always POLLING).

    Raises:
        ConfigurationError: not a DynamoDB stream ARN, FANOUT, or AT_TIMESTAMP.
    """
    if not DYNAMODB_STREAM_ARN.match(arn):
        raise ConfigurationError(
            f"{arn!r} is not a DynamoDB stream ARN (DDBCDC_SOURCE is dynamodb-streams: set "
            "DDBCDC_STREAM_ARN to arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL, "
            "or leave it unset to read the source table's stream)"
        )
    if settings.retrieval_mode == "FANOUT":
        raise ConfigurationError(
            "DDBCDC_RETRIEVAL_MODE=FANOUT: DynamoDB Streams has no enhanced fan-out (unset it)"
        )
    if start == "AT_TIMESTAMP":
        raise ConfigurationError(
            "AT_TIMESTAMP: DynamoDB Streams starts a shard at TRIM_HORIZON or LATEST only"
        )
    return "POLLING"


def cache_dir(settings: Settings) -> Path:
    """Where downloaded jars and compiled classes are kept."""
    if settings.cache_dir is not None:
        return settings.cache_dir
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ddbcdc"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(jar: MavenJar, into: Path, opener: Callable[[str], IO[bytes]]) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    target = into / jar.file_name
    log.warning(
        "downloading %s from Maven Central into %s (first use of DDBCDC_SOURCE=dynamodb-streams)",
        jar.coordinates,
        into,
    )
    fd, partial = tempfile.mkstemp(prefix=f".{jar.file_name}.", dir=into)
    try:
        with os.fdopen(fd, "wb") as out, opener(jar.url) as response:
            shutil.copyfileobj(response, out)
        found = _sha256(Path(partial))
        if found != jar.sha256:
            raise ConfigurationError(
                f"{jar.url} has SHA-256 {found}, expected {jar.sha256}: not the published "
                f"{jar.coordinates}; nothing was kept"
            )
        os.replace(partial, target)
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigurationError(
            f"could not download {jar.coordinates} from {jar.url} ({exc}): reach Maven "
            f"Central, or set DDBCDC_ADAPTER_JAR to a copy of {jar.file_name} "
            f"(SHA-256 {jar.sha256})"
        ) from exc
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


def _open_url(url: str) -> IO[bytes]:
    response: IO[bytes] = urllib.request.urlopen(url, timeout=60)  # noqa: S310 - https only
    return response


def adapter_jar(settings: Settings, *, opener: Callable[[str], IO[bytes]] = _open_url) -> Path:
    """The adapter jar, checked: ``DDBCDC_ADAPTER_JAR``, the cached copy, or a download.

    Raises:
        ConfigurationError: the given copy is missing or not the published jar, or the
            download failed (naming the URL and what to do).
    """
    if settings.adapter_jar is not None:
        given = settings.adapter_jar
        if not given.is_file():
            raise ConfigurationError(f"DDBCDC_ADAPTER_JAR {given} is not a file")
        if _sha256(given) != ADAPTER.sha256:
            raise ConfigurationError(
                f"DDBCDC_ADAPTER_JAR {given} is not {ADAPTER.coordinates} "
                f"(its SHA-256 differs from {ADAPTER.sha256})"
            )
        return given
    cached = cache_dir(settings) / "jars" / ADAPTER.file_name
    if cached.is_file():
        if _sha256(cached) == ADAPTER.sha256:
            return cached
        log.warning("cached %s does not match its SHA-256: downloading it again", cached)
        cached.unlink()
    return _download(ADAPTER, cached.parent, opener)


def launcher_source() -> Path:
    """``StreamsDaemon.java``, installed with the package (``workers/``)."""
    return workers_file(LAUNCHER_SOURCE)


def compile_launcher(
    java: str, jars: list[Path], settings: Settings, *, source: Path | None = None
) -> Path:
    """The folder holding the compiled launcher, compiling it on first use.

    Args:
        source: the launcher's source; :func:`launcher_source` by default.

    Raises:
        ConfigurationError: this Java has no compiler module, or the compilation failed.
    """
    source = source or launcher_source()
    key = hashlib.sha256(source.read_bytes())
    for jar in jars:
        key.update(jar.name.encode())
    target = cache_dir(settings) / "launcher" / key.hexdigest()[:20]
    if (target / f"{LAUNCHER_CLASS}.class").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        command = [
            java,
            "-m",
            "jdk.compiler/com.sun.tools.javac.Main",
            "--release",
            "17",
            "-nowarn",
            "-d",
            str(building),
            "-cp",
            os.pathsep.join(str(j) for j in jars),
            str(source),
        ]
        log.info("compiling the DynamoDB Streams launcher into %s", target)
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise ConfigurationError(_compile_failure(java, done.stdout + done.stderr))
        try:
            building.rename(target)
        except OSError:  # another worker compiled it meanwhile: theirs is as good
            if not (target / f"{LAUNCHER_CLASS}.class").is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def _compile_failure(java: str, output: str) -> str:
    if "jdk.compiler" in output and ("not found" in output or "FindException" in output):
        return (
            f"{java} has no jdk.compiler module, needed once to compile the DynamoDB Streams "
            "launcher: use a Java that has it (Debian: openjdk-17-jre-headless, or any JDK), "
            "or run `ddbcdc worker --prepare` where one is and point DDBCDC_CACHE_DIR at a "
            "copy of that cache"
        )
    last = " | ".join(line for line in output.strip().splitlines()[-5:])
    return f"compiling the DynamoDB Streams launcher failed: {last}"


def prepare(settings: Settings, java: str, kcl_jars: list[Path]) -> tuple[list[Path], Path]:
    """Everything the launcher runs with: (classpath jars, folder of the compiled class)."""
    jars = [*kcl_jars, adapter_jar(settings)]
    return jars, compile_launcher(java, jars, settings)
