"""What a colony shows other processes of its workers (`aether-mcp top`, `aether-mcp workers`), in private files.

Each queued or running worker has a note in `.aether/running/` (see `spawn_log`), and every worker has its
details in `.aether/details/<worker_id>.json`: the first lines of its task, its requests at the wire, and, once
it has finished, its evidence. While a worker runs, both are rewritten at most every PUBLISH_S after a change
(a turn, a request): a change shows within a second, and a busy worker costs a few small writes a second.
Neither holds a token or a key the server knows of: the task is redacted as transcripts are (before its first
lines are taken), and a request's record has no headers.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ..errors import AetherError
from ..own_files import keep_out_of_git
from ..private_files import read_private, replace_private
from ..profile.names import is_worker_id
from .spawn_log import record_running

if TYPE_CHECKING:
    from .result import WorkerResult
    from .wire import Lease


class Worker(Protocol):
    """What is published of a worker: a colony's process worker, or a wrapped session's conversation."""

    @property
    def worker_id(self) -> str: ...

    @property
    def task_head(self) -> str: ...

    @property
    def turns(self) -> int: ...

    @property
    def last_tool(self) -> str | None: ...

    @property
    def live(self) -> bool: ...

    @property
    def lease(self) -> Lease | None: ...

    def record(self) -> WorkerResult: ...


log = logging.getLogger("aether_mcp")

PUBLISH_S = 0.5
TASK_LINES, TASK_CHARS = 4, 400  # what the details keep of a task: enough to recognise it
MAX_REQUESTS = 200  # a worker's most recent requests in its details
MAX_DETAILS = 500  # the details kept: the most recent workers' (the spawn log keeps every worker's line)
MAX_DETAILS_BYTES = 1024 * 1024


def details_dir(state_dir: Path) -> Path:
    return state_dir / "details"


def task_head(task: str) -> str:
    """The first lines of a task, as the details keep them."""
    head = "\n".join(task.strip().splitlines()[:TASK_LINES])
    return head if len(head) <= TASK_CHARS else head[: TASK_CHARS - 1] + "…"


def note(worker: Worker) -> dict[str, Any]:
    """A queued or running worker's note: its log entry as it stands, with what the gateway has counted so far."""
    return {**worker.record().log_entry(), "turns": worker.turns, "last_tool": worker.last_tool}


def details(worker: Worker) -> dict[str, Any]:
    result = worker.record()
    records = worker.lease.records[-MAX_REQUESTS:] if worker.lease is not None else []
    return {
        "worker_id": result.worker_id,
        "task_head": worker.task_head,
        "requests": [asdict(record) for record in records],
        "routing_evidence": result.routing_evidence,
        "routing_mismatches": [mismatch.model_dump() for mismatch in result.routing_mismatches],
        "worktree": result.worktree,
        "branch": result.branch,
    }


def read_details(state_dir: Path, worker_id: str) -> dict[str, Any] | None:
    """A worker's details, or None when there are none (or they are not a regular file of ours)."""
    if not is_worker_id(worker_id):
        return None
    try:
        found = json.loads(read_private(details_dir(state_dir) / f"{worker_id}.json", MAX_DETAILS_BYTES))
    except (OSError, ValueError, AetherError):
        return None
    return found if isinstance(found, dict) else None


class Publisher:
    """Writes the notes and details of the workers that changed, at most every PUBLISH_S."""

    def __init__(self, state_dir: Path, server_dir: Path) -> None:
        self._state_dir, self._server_dir = state_dir, server_dir
        self._changed: dict[str, Worker] = {}
        self._wake = anyio.Event()
        self._kept_out_of_git = False  # .aether/.gitignore, written with the colony's first files

    def publish(self, worker: Worker) -> None:
        """Write now: a worker queued, started or finished (the moments `top` and `workers` must not miss)."""
        self._changed.pop(worker.worker_id, None)
        self._write(worker)

    def touch(self, worker: Worker) -> None:
        """`worker` changed (a turn, a request): written with the next round."""
        self._changed[worker.worker_id] = worker
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: a round of writes after each change, then a pause, so changes coalesce."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            changed, self._changed = self._changed, {}
            for worker in changed.values():
                if worker.live:  # a finished worker's last records are the colony's to write
                    self._write(worker)
            await anyio.sleep(PUBLISH_S)

    def _write(self, worker: Worker) -> None:
        if not self._kept_out_of_git:
            keep_out_of_git(self._state_dir, self._server_dir)
            self._kept_out_of_git = True
        try:
            if worker.live:
                record_running(self._state_dir, self._server_dir, note(worker))
            path = details_dir(self._state_dir) / f"{worker.worker_id}.json"
            replace_private(path, self._server_dir, json.dumps(details(worker)).encode())
            if not worker.live:
                prune(details_dir(self._state_dir))
        except (AetherError, OSError) as exc:  # the worker runs on; only what others see of it is late
            log.warning("worker %s not published: %s", worker.worker_id, exc)


def prune(folder: Path, keep: int = MAX_DETAILS) -> None:
    """Remove the oldest details past `keep` (a tenth more first, so this runs once every so many workers)."""
    entries = [e for e in os.scandir(folder) if e.name.endswith(".json") and e.is_file(follow_symlinks=False)]
    if len(entries) <= keep + keep // 10:
        return
    entries.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime)
    for entry in entries[: len(entries) - keep]:
        Path(entry.path).unlink(missing_ok=True)
