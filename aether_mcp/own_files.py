"""aether-mcp's own files in a project's `.aether/`, kept out of git.

`.aether/` is Aether's folder too, and users commit some of its files (the
profile). aether-mcp's records there (the spawn log, the running notes, the
details, transcripts, worktrees, install's record) are the user's machine's,
not the project's: a `.gitignore` of aether-mcp's own names exactly them, and
ignores itself, so `git status` after a wave shows nothing of aether-mcp's.
A `.gitignore` already there that aether-mcp did not write is left as it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import AetherError
from .private_files import private_dir, read_regular, replace_private

MARK = "# aether-mcp's own files (records of its workers and of install); Aether's files are not listed.\n"
OWN = ("/.gitignore", "/spawn-log.jsonl", "/installed.json", "/running/", "/details/", "/workers/", "/worktrees/")
log = logging.getLogger("aether_mcp")
GITIGNORE = MARK + "".join(f"{name}\n" for name in OWN)


def keep_out_of_git(state_dir: Path, server_dir: Path) -> None:
    """Write `.aether/.gitignore` naming aether-mcp's own files, unless a `.gitignore` not its own is there.
    One that cannot be written is logged, not raised: the workers run all the same."""
    try:
        path = private_dir(state_dir, server_dir) / ".gitignore"
        try:
            current: str | None = read_regular(path, len(GITIGNORE) + 1)[0].decode("utf-8", "replace")
        except FileNotFoundError:
            current = None
        if current is None or (current.startswith(MARK) and current != GITIGNORE):
            replace_private(path, server_dir, GITIGNORE.encode())
    except (AetherError, OSError) as exc:  # a link or a device in its place is not ours to replace
        log.warning("%s/.gitignore not written: %s", state_dir, exc)
