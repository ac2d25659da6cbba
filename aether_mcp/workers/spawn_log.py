"""`.aether/spawn-log.jsonl`: one JSON line per finished worker, the answer to "which model did it use?"."""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path
from typing import Any


def append_entry(path: Path, entry: dict[str, Any]) -> None:
    """Append one line in a single O_APPEND write, so servers sharing the log never interleave lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
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
