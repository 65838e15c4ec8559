"""The worker's temporary folder, and the removal of folders that dead workers left behind.

``ddbcdc worker`` keeps its rendered KCL properties and the processors' metric files in a
folder ``ddbcdc-worker-*`` under the system's temporary directory. The folder holds a lock
file, ``owner.lock``, locked (``flock``) by the worker and by the KCL daemon it starts (the
daemon inherits the descriptor), so the lock is free only once both are gone, however they
ended. Every start removes the folders whose lock it can take: their owners are dead.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["LOCK_NAME", "PREFIX", "WorkDir", "remove_abandoned"]

log = logging.getLogger(__name__)

PREFIX = "ddbcdc-worker-"
LOCK_NAME = "owner.lock"
# A folder without its lock file is being created, or its creator died in the instant between
# mkdtemp and the lock: only the second kind is this old.
_UNLOCKED_GRACE_S = 3600.0


def _try_lock(path: Path) -> int | None:
    """An open, exclusively locked descriptor of ``path``, or None if someone holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def remove_abandoned(parent: Path | None = None, *, now: float | None = None) -> list[Path]:
    """Remove the worker folders in ``parent`` (the temp dir) whose owners are gone.

    Returns:
        The folders removed.
    """
    base = Path(parent or tempfile.gettempdir())
    now = time.time() if now is None else now
    removed = []
    for folder in sorted(base.glob(f"{PREFIX}*")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        lock = folder / LOCK_NAME
        if not lock.exists():
            with contextlib.suppress(OSError):
                if now - folder.stat().st_mtime > _UNLOCKED_GRACE_S:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
            continue
        fd = _try_lock(lock)
        if fd is None:
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)
        removed.append(folder)
        log.info("removed the folder of a dead worker path=%s", folder)
    return removed


class WorkDir:
    """A fresh worker folder, locked for as long as this process (and its heirs) live.

    Use as a context manager: the folder is removed on exit. :attr:`lock_fd` is the
    descriptor to pass on to children that must keep the folder alive (``pass_fds``).

    Args:
        parent: where to create it (the system's temporary directory when None).
    """

    def __init__(self, parent: Path | None = None) -> None:
        self.parent = parent
        self.path = Path()
        self.lock_fd = -1

    def create(self) -> WorkDir:
        """Remove abandoned folders, then make and lock a new one; returns self."""
        remove_abandoned(self.parent)
        while True:
            path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=self.parent))
            lock = path / LOCK_NAME
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another worker's clean-up may have taken the lock between open and flock and
            # removed the folder: then start over with a new one.
            if lock.exists() and os.stat(lock).st_ino == os.fstat(fd).st_ino:
                self.path, self.lock_fd = path, fd
                return self
            os.close(fd)

    def remove(self) -> None:
        """Delete the folder and release the lock."""
        if self.lock_fd < 0:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self.lock_fd)
        self.lock_fd = -1

    def __enter__(self) -> WorkDir:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()
