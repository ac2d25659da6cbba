"""`.aether/spawn-log.jsonl`: one JSON line per finished worker, the answer to "which model did it use?".

Beside it, `.aether/running/`: a record per queued or running worker, written before it runs and removed once
its log line is written. A server killed outright leaves its records behind; a record whose server is gone is
an interrupted worker, and `settle_interrupted` moves it into the log as such.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .. import procs
from ..errors import AetherError
from ..private_files import open_private, read_private, replace_private
from ..profile.names import is_worker_id
from .result import WorkerLine

INTERRUPTED = "interrupted"


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
            except ValueError:  # not JSON, or a number past what Python reads (over 4,300 digits)
                continue
            if isinstance(entry, dict):
                recent.append(entry)
    return list(reversed(recent))


def running_dir(state_dir: Path) -> Path:
    return state_dir / "running"


def note_path(state_dir: Path, worker_id: str) -> Path:
    """Where a worker's note is: named by its id, which must be a plain worker id (never a path)."""
    if not is_worker_id(worker_id):
        raise AetherError(f"{worker_id!r} is not a worker id.")
    return running_dir(state_dir) / f"{worker_id}.json"


def record_running(state_dir: Path, server_dir: Path, entry: dict[str, Any]) -> None:
    """Note a queued or running worker, with its server's identity (0600, replaced whole)."""
    record = {**entry, "server": procs.identity()}
    replace_private(note_path(state_dir, entry["worker_id"]), server_dir, json.dumps(record).encode())


def forget_running(state_dir: Path, worker_id: str) -> None:
    note_path(state_dir, worker_id).unlink(missing_ok=True)


def read_running(state_dir: Path) -> list[dict[str, Any]]:
    """The queued and running workers of every server in this project, newest first; a worker whose server
    is gone has the status `interrupted`. A note counts only when it is named by a worker id and names the
    same one inside: a planted note can name no other file."""
    folder = running_dir(state_dir)
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entry = json.loads(read_private(path, 1024 * 1024))
        except (OSError, ValueError, AetherError):  # a note planted as a link, a FIFO, or damaged: not ours
            continue
        if isinstance(entry, dict) and is_worker_id(path.stem) and entry.get("worker_id") == path.stem:
            if not procs.alive(str(entry.get("server"))):
                entry["status"] = INTERRUPTED
            found.append(entry)
    return sorted(found, key=lambda e: str(e.get("started_at") or ""), reverse=True)


def settle_interrupted(state_dir: Path, server_dir: Path) -> list[dict[str, Any]]:
    """Move the records of workers whose server is gone into the spawn log, as interrupted; return them."""
    settled = []
    for entry in read_running(state_dir):
        if entry["status"] == INTERRUPTED:
            entry["error"] = "Its server ended before it did (killed, or the machine went down)."
            append_entry(log_path(state_dir), server_dir, {k: v for k, v in entry.items() if k != "server"})
            forget_running(state_dir, str(entry["worker_id"]))
            settled.append(entry)
    return settled


def recent_lines(state_dir: Path, limit: int, mine: Callable[[str], bool]) -> list[WorkerLine]:
    """The project's most recent workers of every session and server, newest first: the queued and running
    (their notes), then the finished (the spawn log), at most `limit`; each marked `mine` as the caller says.
    An entry that does not read as a worker is left out."""
    lines: dict[str, WorkerLine] = {}
    for entry in read_running(state_dir) + read_spawn_log(log_path(state_dir), limit):
        worker_id = str(entry.get("worker_id"))
        if not is_worker_id(worker_id) or worker_id in lines:
            continue
        try:
            line = WorkerLine.model_validate({k: entry.get(k) for k in WorkerLine.model_fields if k in entry})
        except ValidationError:
            continue
        lines[worker_id] = line.model_copy(update={"mine": mine(worker_id)})
    return list(lines.values())[:limit]
