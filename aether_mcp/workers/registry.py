"""The workers a colony knows: who may see each, and how long the finished are kept."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import AetherError
from .result import WorkerLine
from .worker import Worker
from .worktree import Worktree

# Finished workers kept for get_worker and list_workers (their task text is dropped when they finish).
MAX_HISTORY = 200


class Registry:
    """Workers by id, oldest first. Each owner (an MCP session) sees only its own: another's is unknown."""

    def __init__(self) -> None:
        self._workers: dict[str, Worker] = {}

    def __iter__(self) -> Iterator[Worker]:
        return iter(list(self._workers.values()))

    def add(self, worker: Worker) -> None:
        self._workers[worker.worker_id] = worker
        self._prune()

    def get(self, worker_id: str, owner: str | None = "") -> Worker:
        """A worker `owner` started; another owner's worker is as unknown as one that never was. `owner` None:
        whoever started it (the server's own user, from `aether-mcp top`)."""
        worker = self._workers.get(worker_id)
        if worker is None or owner not in (None, worker.owner):
            mine = [key for key, w in self._workers.items() if owner in (None, w.owner)]
            known = ", ".join(mine[-10:]) or "none yet"
            where = "this server" if owner is None else "this session"
            raise AetherError(f"No worker '{worker_id}' in {where}. Its recent workers: {known}.")
        return worker

    def lines(self, owner: str = "") -> list[WorkerLine]:
        """The workers `owner` started, newest first."""
        return [w.line() for w in reversed(self._workers.values()) if w.owner == owner]

    def queued(self) -> int:
        return sum(1 for w in self._workers.values() if w.status == "queued")

    def turn_running(self, tree: Worktree, other_than: Worker | None = None) -> bool:
        """Whether a worker (other than `other_than`) is still at work in `tree`."""
        return any(w.worktree == tree and not w.done.is_set() and w is not other_than for w in self._workers.values())

    def forget_worktree(self, tree: Worktree) -> None:
        """`tree` is gone: no worker names it any more."""
        for worker in self._workers.values():
            if worker.worktree == tree:
                worker.remove_worktree()

    def _prune(self) -> None:
        """Forget the oldest finished workers past MAX_HISTORY (they stay in the spawn log)."""
        finished = [key for key, w in self._workers.items() if w.done.is_set()]
        for key in finished[: max(0, len(finished) - MAX_HISTORY)]:
            del self._workers[key]
