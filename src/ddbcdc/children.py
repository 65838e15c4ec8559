"""Child processes that do not outlive the process that started them, and whether a process
is there at all."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["pid_exists", "signal_when_parent_dies"]

_PR_SET_PDEATHSIG = 1


def signal_when_parent_dies(signum: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``signum`` to the child when its parent dies.

    The signal is tied to the *thread* that forks, so start such children from a thread
    that lives as long as they should. Returns None where PR_SET_PDEATHSIG does not exist.
    """
    if sys.platform != "linux":
        return None

    def hook() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signum))

    return hook


def pid_exists(pid: int) -> bool:
    """Whether a process with ``pid`` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
