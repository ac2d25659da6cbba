"""Replacing a file whole: readers see the old bytes or the new, never half of them.

One writer for every file aether-mcp replaces: a user's (the profile, `.mcp.json`,
Claude Code's settings, agent files), which keep their mode and reach the disk
before the call returns, and its own private records (see `private_files`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

NEW_FILE_MODE = 0o644


def write_atomic(
    path: Path, data: str | bytes, *, mode: int | None = None, fsync: bool = True, clear_stale: bool = True
) -> None:
    """Write `data` (text as UTF-8, its line endings as they are) to a temp file beside `path`, then rename it
    over `path`: readers see old or new, never half. A link at `path` is replaced, never written through.

    `mode`: the file's permissions; None keeps those of the file replaced (a new one is 0644).
    `fsync`: the data and the rename are on disk when this returns, so a crash leaves old or new.
    `clear_stale`: the caller is the file's one writer (it holds its lock), so a temp file already beside it was
    left by a writer that was killed mid-write, and is removed."""
    if clear_stale:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    if mode is None:
        mode = path.stat().st_mode & 0o7777 if path.exists() else NEW_FILE_MODE
    # mkstemp creates a new name (O_EXCL), so the temp file is never a link someone planted.
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    if fsync:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
