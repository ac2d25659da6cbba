"""aether-mcp's own files: a 0700 folder, 0600 files, and never a symbolic link followed.

Transcripts, the spawn log and the workers' settings files can hold what a
worker saw or was given, so other local users may not read them, and a link
planted in their place (`.aether/spawn-log.jsonl -> ~/.bashrc`) is an error,
its target untouched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from .atomic import write_atomic
from .errors import AetherError

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, base: Path) -> Path:
    """`path`, below `base`, as folders only this user can enter, each created if missing.

    Every folder from `base` down is checked: a link or a file in the way is an error."""
    folder = base
    for part in path.relative_to(base).parts:
        if part in ("..", "."):
            raise AetherError(f"{path} is not a plain path below {base}")
        folder = folder / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, DIR_MODE)
        info = os.lstat(folder)
        if stat.S_ISLNK(info.st_mode):
            raise AetherError(
                f"{folder} is a symbolic link; aether-mcp does not follow links in its folders", "Remove it"
            )
        if not stat.S_ISDIR(info.st_mode):
            raise AetherError(f"{folder} is not a directory", "Remove or rename it; aether-mcp keeps its files there")
        if stat.S_IMODE(info.st_mode) != DIR_MODE:
            os.chmod(folder, DIR_MODE)
    return path


def open_private(path: Path, base: Path, *, append: bool = False) -> int:
    """A file descriptor for writing `path` (0600; created, truncated, or appended to), never through a link.

    Its folders below `base` are made private first."""
    private_dir(path.parent, base)
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    fd = _open_no_link(path, flags, "write")
    os.fchmod(fd, FILE_MODE)
    return fd


def _open_no_link(path: Path, flags: int, verb: str) -> int:
    """os.open with O_NOFOLLOW; a link in the way is an AetherError that says so."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AetherError(
                f"{path} is a symbolic link; aether-mcp does not {verb} through links", "Remove it"
            ) from None
        raise


def write_private(path: Path, base: Path, data: bytes) -> None:
    """Write a whole 0600 file at once."""
    fd = open_private(path, base)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_regular(path: Path, limit: int, start: int | None = 0) -> tuple[bytes, os.stat_result]:
    """At most `limit` bytes of the regular file `path` from `start` (None: its last `limit` bytes), and what
    fstat says of it: never through a link, never a device, and never waiting on a FIFO. FileNotFoundError
    when it is missing; AetherError for what is not a regular file."""
    fd = _open_no_link(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC, "read")
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise AetherError(f"{path} is not a regular file; nothing was changed", "Move it away, then try again")
        if start != 0:
            handle.seek(max(0, info.st_size - limit) if start is None else start)
        return handle.read(limit), info


def read_private(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of the regular file `path`, never through a link (FileNotFoundError when missing)."""
    return read_regular(path, limit)[0]


def replace_private(path: Path, base: Path, data: bytes) -> None:
    """Replace a whole 0600 file, in folders below `base` made private, never through a link: readers see old or
    new. Not fsynced: one lost in a crash costs a `trust` or an `install` again, not the user's data. Nothing
    holds its lock, so a temp file beside it may be another writer's, and stays."""
    private_dir(path.parent, base)
    write_atomic(path, data, mode=FILE_MODE, fsync=False, clear_stale=False)


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the user's own aether-mcp folder is ($XDG_CONFIG_HOME/aether-mcp, else ~/.config/aether-mcp)."""
    env = os.environ if environ is None else environ
    return Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME") or Path.home()) / ".config") / "aether-mcp"


def user_config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user's own aether-mcp folder, made (0700) if it is missing."""
    folder = user_config_path(environ)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return private_dir(folder, folder.parent)
