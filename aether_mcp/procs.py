"""Processes as Linux's /proc tells them: a process's parent, and a name that a reused pid cannot take over.

Standard library only: the hook uses it on every sub-agent call.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def children() -> dict[int, list[int]]:
    """Every process's children, by parent pid, as /proc tells them now."""
    found: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            up = parent(int(entry.name))
            if up is not None:
                found.setdefault(up, []).append(int(entry.name))
    return found


def descendants(pid: int, depth: int) -> list[int]:
    """`pid`'s children, their children, ... down to `depth` generations."""
    tree, found, level = children(), [], [pid]
    for _ in range(depth):
        level = [child for up in level for child in tree.get(up, [])]
        found += level
    return found


def command_line(pid: int) -> bytes:
    """The process's arguments joined by spaces; empty when it is gone (or not ours to read)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields and len(fields) > 1 else None


MAX_ANCESTORS = 16


def ancestors(pid: int) -> list[int]:
    """`pid`'s parent, its parent's parent, ... up to init (at most MAX_ANCESTORS)."""
    found: list[int] = []
    while len(found) < MAX_ANCESTORS:
        up = parent(pid)
        if up is None or up <= 1:
            break
        found.append(up)
        pid = up
    return found


def is_claude_code(pid: int) -> bool:
    """Whether the process runs a Claude Code CLI (its binary, or node running its package)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]
    except OSError:
        return False
    return any(Path(word.decode(errors="replace")).name == "claude" or b"claude-code" in word for word in words)


def start_time(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (field 22 of stat)."""
    fields = _stat_fields(pid)
    return fields[19] if fields and len(fields) > 19 else None


def identity(pid: int | None = None) -> str:
    """`<pid>/<start time>` of a process (this one by default): another process never has the same."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}/{start_time(pid) or '?'}"


def alive(identity_: str) -> bool:
    """Whether the process named by `identity` still runs (a reused pid is another process)."""
    pid, _, started = identity_.partition("/")
    return pid.isdigit() and start_time(int(pid)) == started


def environment_names(pid: int) -> set[str] | None:
    """The names in a process's environment (as it started); None when it cannot be read (gone, or not ours)."""
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    return {entry.split(b"=", 1)[0].decode(errors="replace") for entry in data.split(b"\0") if entry}


def keep_environment_private() -> None:
    """Keep this process's environment and memory from processes of its own user, its workers among them: its
    environment may hold the proxy token (`${VAR}` in the profile), and a worker's Bash runs as the same user,
    below it. Linux lets only a process with CAP_SYS_PTRACE read the /proc files (environ, mem) of a process
    that is not dumpable; a child is dumpable again once it execs. A worker run as root has that capability:
    nothing here keeps it out."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    pr_set_dumpable = 4
    prctl(pr_set_dumpable, 0)
