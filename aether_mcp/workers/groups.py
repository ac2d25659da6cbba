"""A worker's processes as one thing to end: its own process group, a mark in its environment, and the kernel's
promise to kill it with its parent.

Standard library only: the node side of a remote worker (`node.py`) uses it too, and Ray carries both to a node
by value.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable

# Each worker's processes carry a mark of their own in their environment, which a child that leaves the
# worker's process group (`setsid -f`) keeps: the mark finds it when the worker ends.
MARK_VARIABLE = "AETHER_WORKER_MARK"


def die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to kill the worker if whatever started it dies without cleaning up."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return hook


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pgid, sig)


def kill_marked(mark: str) -> None:
    """SIGKILL every process of this user whose environment carries `mark`."""
    for pid in marked(mark):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def marked(mark: str) -> list[int]:
    """This user's processes whose environment carries `mark`."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as environ:
                    if needle in environ.read().split(b"\0"):
                        found.append(int(entry.name))
            except OSError:  # gone, or another user's
                continue
    return found
