"""The worker's folder: locked while its owner lives, removed by the next start once not."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ddbcdc.worker.workdir import LOCK_NAME, PREFIX, WorkDir, remove_abandoned

OWNER = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path
    from ddbcdc.worker.workdir import WorkDir
    work = WorkDir(Path(sys.argv[1])).create()
    # an heir that keeps the lock, as the KCL daemon does
    heir = subprocess.Popen(["sleep", "60"], pass_fds=(work.lock_fd,), stdout=subprocess.DEVNULL)
    print(work.path, heir.pid, flush=True)
    time.sleep(60)
    """
)


def test_a_folder_is_removed_only_once_its_owner_and_heirs_are_dead(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    folder_text, heir_text = owner.stdout.readline().split()
    folder, heir = Path(folder_text), int(heir_text)
    try:
        assert folder.parent == tmp_path and folder.name.startswith(PREFIX)
        assert remove_abandoned(tmp_path) == []
        owner.kill()  # SIGKILL: no clean-up of its own
        owner.communicate(timeout=30)
        assert remove_abandoned(tmp_path) == []  # the heir still holds the lock
        os.kill(heir, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not remove_abandoned(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not folder.exists()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.communicate(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.kill(heir, signal.SIGKILL)


def test_a_new_folder_is_locked_and_removed_on_exit_and_leaves_unlocked_young_ones(
    tmp_path: Path,
) -> None:
    young = tmp_path / f"{PREFIX}young"
    young.mkdir()  # being created by someone else: no lock file yet
    old = tmp_path / f"{PREFIX}old"
    old.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    stranger = tmp_path / "something-else"
    stranger.mkdir()
    with WorkDir(tmp_path) as work:
        assert (work.path / LOCK_NAME).exists()
        assert remove_abandoned(tmp_path) == []  # ours is locked
        assert young.exists() and not old.exists() and stranger.exists()
    assert not work.path.exists()
