"""Child processes of the local stack: start with a log file, wait until ready, stop by PID."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ddbcdc.children import pid_exists, signal_when_parent_dies
from ddbcdc.errors import ConfigurationError

__all__ = ["ManagedProcess", "pid_alive", "pid_alive_since", "stop_pid", "wait_until"]

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (and is not a zombie of ours)."""
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    return pid_exists(pid)


def pid_alive_since(pid: int, written: float) -> bool:
    """Whether ``pid`` is alive and still the process a state file written at ``written``
    (epoch seconds) names: it started by then (a second's slack for the clock ticks). After a
    crash or a reboot the pid may be another process's, started later, never to be signalled.
    Where the start time cannot be read (no ``/proc``), whether it exists."""
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/stat", "rb") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith(b"btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    return boot + ticks / os.sysconf("SC_CLK_TCK") <= written + 1.0


def stop_pid(pid: int, *, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to ``pid``, then SIGKILL if it is still alive after ``grace`` seconds."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    log.warning("pid %d ignored signal %d for %.1fs: killing it", pid, sig, grace)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, alive: Callable[[], bool]
) -> None:
    """Poll ``check`` until it is true; fail when ``alive`` turns false or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            log.debug("%s not ready yet", what, exc_info=True)
        if not alive():
            raise ConfigurationError(f"{what} exited before it was ready")
        if time.monotonic() > deadline:
            raise ConfigurationError(f"{what} was not ready within {timeout:.0f}s")
        time.sleep(0.1)


class ManagedProcess:
    """One child process with its output in a log file.

    Args:
        name: a short name for logs and errors (``moto``, ``kinesis``, ``bridge``).
        argv: the command line.
        log_path: where stdout and stderr go.
        env: the environment (the current one when None).
        cwd: the working directory.
        stop_grace: seconds between SIGTERM and SIGKILL when stopping.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_grace: float = 5.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stop_grace = stop_grace
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The PID of the running process."""
        if self._popen is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._popen.pid

    def start(self) -> ManagedProcess:
        """Start the process; returns self."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                # No emulator outlives its owner.
                preexec_fn=signal_when_parent_dies(signal.SIGKILL),
            )
        log.info("started %s (pid %d), log %s", self.name, self._popen.pid, self.log_path)
        return self

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self._popen is not None and self._popen.poll() is None

    def wait_ready(self, check: Callable[[], bool], *, timeout: float = 60.0) -> None:
        """Block until ``check`` passes; fail with the log's tail if the process dies."""
        try:
            wait_until(check, timeout=timeout, what=self.name, alive=self.alive)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{exc}; last log lines:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the process's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period; reaps the process."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM: killing pid %d", self.name, self._popen.pid)
                self._popen.kill()
                self._popen.wait(10)
        log.info("stopped %s (pid %d)", self.name, self._popen.pid)
        self._popen = None
