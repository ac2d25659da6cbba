"""`.aether/spawn-log.jsonl`: one JSON line per finished worker, the answer to "which model did it use?"."""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path
from typing import Any

from ..private_files import open_private


def log_path(state_dir: Path) -> Path:
    return state_dir / "spawn-log.jsonl"


def append_entry(path: Path, base: Path, entry: dict[str, Any]) -> None:
    """Append one line in a single O_APPEND write, so servers sharing the log never interleave lines.

    The log is 0600 in a 0700 folder below `base`, and never written through a link."""
    line = (json.dumps(entry) + "\n").encode()
    fd = open_private(path, base, append=True)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_spawn_log(path: Path, limit: int) -> list[dict[str, Any]]:
    """The last `limit` entries, newest first; a damaged line is skipped, not fatal."""
    if not path.is_file() or limit <= 0:
        return []
    recent: deque[dict[str, Any]] = deque(maxlen=limit)
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                recent.append(entry)
    return list(reversed(recent))
