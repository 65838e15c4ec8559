"""The local stack: moto, PostgreSQL and either source, on 127.0.0.1 only.

For ``source="kinesis"`` (the default): kinesis-local and the bridge (DynamoDB Streams ->
Kinesis). For ``source="dynamodb-streams"``: the DynamoDB Streams front
(:mod:`ddbcdc.local.streams_front`: moto's streams with shard lineage and rollover).

Tests and benchmarks use :class:`LocalStack` as a context manager; ``ddbcdc local up`` runs
one in a detached supervisor process (:mod:`ddbcdc.local.supervisor`). Every service gets a
free port, so several stacks can run on one machine at once.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import orjson

from ddbcdc.local.kinesis import launch_kinesis, wait_for_kinesis
from ddbcdc.local.moto import launch_moto, wait_for_moto
from ddbcdc.local.postgres import TemporaryPostgres, free_port
from ddbcdc.local.processes import ManagedProcess
from ddbcdc.settings import Settings

__all__ = ["LocalStack", "StackInfo"]

log = logging.getLogger(__name__)

ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # noqa: S105 - the emulators' well-known fake credentials


@dataclass(frozen=True)
class StackInfo:
    """Where a running local stack answers, and the PIDs of its processes."""

    region: str
    moto_endpoint: str
    kinesis_endpoint: str
    kinesis_tls_endpoint: str
    database_url: str
    log_dir: str
    pids: dict[str, int] = field(default_factory=dict)
    source: Literal["kinesis", "dynamodb-streams"] = "kinesis"
    streams_endpoint: str = ""  # the DynamoDB Streams front, with source dynamodb-streams

    @property
    def dynamodb_endpoint(self) -> str:
        """DynamoDB (moto)."""
        return self.moto_endpoint

    @property
    def dynamodbstreams_endpoint(self) -> str:
        """DynamoDB Streams: the front when it runs, else moto's own."""
        return self.streams_endpoint or self.moto_endpoint

    @property
    def cloudwatch_endpoint(self) -> str:
        """CloudWatch (moto)."""
        return self.moto_endpoint

    @property
    def s3_endpoint(self) -> str:
        """S3 (moto: where its ExportTableToPointInTime writes exports)."""
        return self.moto_endpoint

    @property
    def env(self) -> dict[str, str]:
        """The environment a client of this stack uses (what ``ddbcdc local env`` prints)."""
        source = {"DDBCDC_SOURCE": self.source} if self.source != "kinesis" else {}
        kinesis = (
            {"DDBCDC_KINESIS_ENDPOINT": self.kinesis_endpoint} if self.kinesis_endpoint else {}
        )
        return {
            **source,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "DDBCDC_DYNAMODB_ENDPOINT": self.dynamodb_endpoint,
            "DDBCDC_DYNAMODBSTREAMS_ENDPOINT": self.dynamodbstreams_endpoint,
            "DDBCDC_CLOUDWATCH_ENDPOINT": self.cloudwatch_endpoint,
            "DDBCDC_S3_ENDPOINT": self.s3_endpoint,
            **kinesis,
            "DATABASE_URL": self.database_url,
        }

    def settings(self, **overrides: Any) -> Settings:
        """Settings pointing at this stack (keyword overrides by field name)."""
        values: dict[str, Any] = {
            "aws_region": self.region,
            "dynamodb_endpoint": self.dynamodb_endpoint,
            "dynamodbstreams_endpoint": self.dynamodbstreams_endpoint,
            "cloudwatch_endpoint": self.cloudwatch_endpoint,
            "s3_endpoint": self.s3_endpoint,
            "kinesis_endpoint": self.kinesis_endpoint or None,
            "database_url": self.database_url or None,
            "source": self.source,
        }
        values.update(overrides)
        return Settings(**values)

    def to_json(self) -> bytes:
        """The state file's content."""
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes | str) -> StackInfo:
        """Read a state file's content."""
        return cls(**orjson.loads(data))


class LocalStack:
    """Start the local stack on enter, stop every process on exit.

    Args:
        database_url: PostgreSQL to use; when None a throwaway cluster is started (unless
            ``postgres`` is False, then ``database_url`` stays empty).
        postgres: start a throwaway PostgreSQL when no ``database_url`` is given.
        bridge: run the DynamoDB Streams -> Kinesis bridge (local stand-in for the managed
            Kinesis streaming destination), with source ``kinesis``.
        source: ``kinesis`` (kinesis-local and the bridge) or ``dynamodb-streams`` (the
            DynamoDB Streams front, ``shards`` shards per stream at first).
        shards: with ``dynamodb-streams``, the front's shards per stream.
        initial_position: where the bridge reads streams that exist when it starts.
        region: the region clients use.
        log_dir: where the processes' logs go; a temporary folder (deleted on stop) if None.
        timeout: seconds each service may take to become ready.
    """

    def __init__(
        self,
        *,
        database_url: str | None = None,
        postgres: bool = True,
        bridge: bool = True,
        source: Literal["kinesis", "dynamodb-streams"] = "kinesis",
        shards: int = 2,
        initial_position: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON",
        region: str = "us-east-1",
        log_dir: Path | None = None,
        timeout: float = 90.0,
    ) -> None:
        self.region = region
        self.initial_position = initial_position
        self.timeout = timeout
        self._database_url = database_url
        self._want_postgres = postgres and database_url is None
        self._want_bridge = bridge and source == "kinesis"
        self.source: Literal["kinesis", "dynamodb-streams"] = source
        self.shards = shards
        self._own_log_dir = log_dir is None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="ddbcdc-stack-"))
        self._processes: dict[str, ManagedProcess] = {}
        self._postgres: TemporaryPostgres | None = None
        self._info: StackInfo | None = None

    @property
    def info(self) -> StackInfo:
        """Endpoints, database URL and PIDs of the running stack."""
        if self._info is None:
            raise RuntimeError("the local stack is not started")
        return self._info

    @property
    def env(self) -> dict[str, str]:
        """See :attr:`StackInfo.env`."""
        return self.info.env

    def worker_env(self, base: Mapping[str, str], **settings: str) -> dict[str, str]:
        """The environment of a worker process on this stack.

        ``base`` (a caller's environment) without its ``DDBCDC_*`` and ``PROMETHEUS_*``
        variables, then this stack's, then ``settings`` (variable name -> value).
        """
        prefixes = ("DDBCDC_", "PROMETHEUS_")
        env = {name: value for name, value in base.items() if not name.startswith(prefixes)}
        return {**env, **self.env, **settings}

    @property
    def database_url(self) -> str:
        """The PostgreSQL URL (SQLAlchemy form) the stack uses."""
        return self.info.database_url

    @property
    def dynamodb_endpoint(self) -> str:
        """moto's URL (DynamoDB, DynamoDB Streams, CloudWatch)."""
        return self.info.moto_endpoint

    @property
    def kinesis_endpoint(self) -> str:
        """kinesis-local's plain URL (HTTP/1.1 and h2c)."""
        return self.info.kinesis_endpoint

    def settings(self, **overrides: Any) -> Settings:
        """See :meth:`StackInfo.settings`."""
        return self.info.settings(**overrides)

    def start(self) -> LocalStack:
        """Start every service, wait until each is ready; returns self."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_services()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_services(self) -> None:
        # Processes start from this thread (PR_SET_PDEATHSIG is tied to the starting thread)
        # and boot in parallel while PostgreSQL starts and the readiness checks run.
        moto, moto_url = launch_moto(log_path=self.log_dir / "moto.log")
        self._processes["moto"] = moto
        kinesis_url = kinesis_tls = streams_url = ""
        if self.source == "kinesis":
            kinesis, kinesis_url, kinesis_tls = launch_kinesis(
                log_path=self.log_dir / "kinesis.log"
            )
            self._processes["kinesis"] = kinesis
        if self._want_postgres:
            self._postgres = TemporaryPostgres()
            self._postgres.start()
        wait_for_moto(moto, moto_url, region=self.region, timeout=self.timeout)
        if self.source == "kinesis":
            wait_for_kinesis(kinesis, kinesis_url, region=self.region, timeout=self.timeout)
        else:
            streams_url = self._start_front(moto_url)
        if self._want_bridge:
            self._start_bridge(moto_url, kinesis_url)
        database_url = self._postgres.url if self._postgres else (self._database_url or "")
        self._info = StackInfo(
            region=self.region,
            moto_endpoint=moto_url,
            kinesis_endpoint=kinesis_url,
            kinesis_tls_endpoint=kinesis_tls,
            database_url=database_url,
            log_dir=str(self.log_dir),
            pids={name: p.pid for name, p in self._processes.items()},
            source=self.source,
            streams_endpoint=streams_url,
        )
        log.info("local stack ready: %s", _loggable(self._info.env))

    def _start_bridge(self, moto_url: str, kinesis_url: str) -> None:
        ready = self.log_dir / "bridge.ready"
        ready.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "ddbcdc.local.bridge",
            "--dynamodb-endpoint",
            moto_url,
            "--kinesis-endpoint",
            kinesis_url,
            "--region",
            self.region,
            "--initial-position",
            self.initial_position,
            "--ready-file",
            str(ready),
        ]
        bridge = ManagedProcess("bridge", argv, log_path=self.log_dir / "bridge.log")
        self._processes["bridge"] = bridge.start()
        bridge.wait_ready(ready.exists, timeout=self.timeout)

    def _start_front(self, moto_url: str) -> str:
        ready = self.log_dir / "front.ready"
        ready.unlink(missing_ok=True)
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "ddbcdc.local.streams_front",
            "--moto-endpoint",
            moto_url,
            "--region",
            self.region,
            "--port",
            str(port),
            "--shards",
            str(self.shards),
            "--ready-file",
            str(ready),
        ]
        front = ManagedProcess("front", argv, log_path=self.log_dir / "front.log")
        self._processes["front"] = front.start()
        front.wait_ready(ready.exists, timeout=self.timeout)
        return f"http://127.0.0.1:{port}"

    def rollover(self, stream_arn: str | None = None, *, split: bool = False) -> list[str]:
        """Roll the front's shards over now (source ``dynamodb-streams``); the new shard ids."""
        import urllib.request

        body = orjson.dumps({"StreamArn": stream_arn, "Split": split})
        url = f"{self.info.streams_endpoint}/rollover"
        request = urllib.request.Request(url, data=body)  # noqa: S310 - loopback http
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            shards: list[str] = orjson.loads(response.read())["Shards"]
        return shards

    def alive(self) -> dict[str, bool]:
        """Per process of the stack: whether it is still running."""
        return {name: process.alive() for name, process in self._processes.items()}

    def stop(self) -> None:
        """Stop every process (bridge first), the throwaway PostgreSQL, and clean up."""
        for name in ("bridge", "front", "kinesis", "moto"):
            process = self._processes.pop(name, None)
            if process is not None:
                process.stop()
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        self._info = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _loggable(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` fit for a log: no AWS secret key, and DATABASE_URL without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = {name: value for name, value in env.items() if name != "AWS_SECRET_ACCESS_KEY"}
    if shown.get("DATABASE_URL"):
        try:
            shown["DATABASE_URL"] = make_url(shown["DATABASE_URL"]).render_as_string()
        except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads: not shown
            shown["DATABASE_URL"] = "(not shown)"
    return shown
