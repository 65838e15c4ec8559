"""A throwaway PostgreSQL cluster from the system's binaries, on loopback.

Used by the tests, the benchmarks and ``ddbcdc local up`` when no DATABASE_URL is given.
As root, the cluster runs as the ``postgres`` system user (``initdb`` refuses root).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from ddbcdc.errors import ConfigurationError

__all__ = ["TemporaryPostgres", "find_pg_bindir", "free_port"]

log = logging.getLogger(__name__)

_INSTALL_HINT = "install PostgreSQL server binaries (Debian: apt-get install postgresql)"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_pg_bindir() -> Path:
    """The newest PostgreSQL server bin directory on this machine."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise ConfigurationError(f"no PostgreSQL server binaries found: {_INSTALL_HINT}")


class TemporaryPostgres:
    """Start a private cluster in a temporary directory; stop and delete it on exit.

    Args:
        port: TCP port on 127.0.0.1 (a free one when 0).
        durable: keep fsync on (benchmarks); tests turn it off for speed.
        dbname: the database created for ddbcdc.
        settings: more server settings (name -> value), e.g. ``track_commit_timestamp``.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        durable: bool = False,
        dbname: str = "ddbcdc",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.durable = durable
        self.dbname = dbname
        self.settings = dict(settings or {})
        self.bindir = find_pg_bindir()
        self._tmp: Path | None = None
        self._user: str | None = None
        self._options: list[str] = []

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the cluster's database (psycopg 3 driver)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ConfigurationError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
            )

    def start(self) -> TemporaryPostgres:
        """Create and start the cluster; returns self."""
        self._tmp = Path(tempfile.mkdtemp(prefix="ddbcdc-pg-"))
        if os.geteuid() == 0:
            self._run_as_postgres(self._tmp)
        self._run(
            "initdb",
            *("-D", str(self._tmp / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8"),
            *("--no-locale", "--no-sync"),
        )
        self._options = self._server_options(self._tmp)
        self._start_server()
        self._run(
            "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.dbname
        )
        log.info("temporary PostgreSQL on 127.0.0.1:%d (%s)", self.port, self._tmp)
        return self

    def _run_as_postgres(self, folder: Path) -> None:
        """As root: run the cluster as the ``postgres`` user (``initdb`` refuses root)."""
        self._user = "postgres"
        try:
            entry = pwd.getpwnam(self._user)
        except KeyError as exc:
            raise ConfigurationError(
                f"running as root needs a 'postgres' user: {_INSTALL_HINT}"
            ) from exc
        os.chown(folder, entry.pw_uid, entry.pw_gid)

    def _server_options(self, folder: Path) -> list[str]:
        """The server's settings: loopback only, and fast rather than durable unless asked."""
        settings = [
            "listen_addresses=127.0.0.1",
            f"port={self.port}",
            f"unix_socket_directories={folder}",
            "max_connections=100",
            "shared_buffers=256MB",
        ]
        if not self.durable:
            settings += ["fsync=off", "full_page_writes=off", "synchronous_commit=off"]
        settings += [f"{name}={value}" for name, value in sorted(self.settings.items())]
        return [part for setting in settings for part in ("-c", setting)]

    def _start_server(self) -> None:
        assert self._tmp is not None
        self._run(
            "pg_ctl",
            "-D",
            str(self._tmp / "data"),
            "-l",
            str(self._tmp / "postgres.log"),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join(self._options),
            "start",
        )

    def crash(self) -> None:
        """Stop the server at once, as a crash would (``pg_ctl -m immediate``); keep the data."""
        assert self._tmp is not None, "start() first"
        self._run("pg_ctl", "-D", str(self._tmp / "data"), "-m", "immediate", "-w", "stop")

    def restart(self) -> None:
        """Start the server again after :meth:`crash` (it recovers from its WAL)."""
        assert self._tmp is not None, "start() first"
        self._start_server()

    def stop(self) -> None:
        """Stop the cluster and delete its files."""
        if self._tmp is None:
            return
        data = self._tmp / "data"
        try:
            self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        except ConfigurationError as exc:
            log.warning("stopping temporary PostgreSQL: %s", exc)
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server accepts TCP connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise ConfigurationError(f"PostgreSQL did not start on port {self.port}")

    def __enter__(self) -> TemporaryPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
