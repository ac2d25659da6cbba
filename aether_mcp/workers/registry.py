"""The workers a colony knows: each one's live state, who may see it, and how long the finished are kept."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio

from ..errors import AetherError
from . import worktree
from .preflight import Preflight
from .proof import page
from .result import WorkerLine, WorkerResult
from .spec import WorkerSpec

if TYPE_CHECKING:
    from .gateway import Lease

# Finished workers kept for get_worker and list_workers (their task text is dropped when they finish).
MAX_HISTORY = 200


class Worker:
    """A worker's live state inside the colony."""

    def __init__(
        self,
        result: WorkerResult,
        spec: WorkerSpec,
        preflight: Preflight | None,
        owner: str,
        *,
        tree: worktree.Worktree | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.result = result
        self.owner = owner
        self.spec = spec
        self.preflight = preflight
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.changed = anyio.Event()
        self.pid: int | None = None
        self.turns = 0
        self.last_tool: str | None = None
        self.worktree = tree
        self.answer: str | None = None  # the whole answer, redacted; result.output holds its first page
        self.lease = lease  # its key at the gateway, and the requests it made there
        self.task_head = ""  # the first lines of its task, redacted: what others are shown of it

    def page(self, offset: int, limit: int) -> WorkerResult:
        """The worker's record with the part of its answer from `offset`, at most `limit` characters."""
        return self.result.model_copy(update={"output": page(self.answer, offset, limit), "output_offset": offset})

    def notify(self) -> None:
        """Wake whoever waits for news of this worker (progress, start, end)."""
        previous, self.changed = self.changed, anyio.Event()
        previous.set()

    async def news(self, timeout_s: float | None = None) -> None:
        """Wait until the worker changes (a turn, its start, its end), or `timeout_s` passes."""
        changed = self.changed
        with anyio.move_on_after(timeout_s):
            await changed.wait()

    def set_pid(self, pid: int) -> None:
        self.pid = pid


def queued_result(spec: WorkerSpec, tree: worktree.Worktree | None) -> WorkerResult:
    """A new worker's record, before it runs."""
    return WorkerResult(
        worker_id=spec.worker_id,
        caste=spec.caste,
        description=spec.description,
        model=spec.model,
        model_source=spec.model_source,
        status="queued",
        transcript_path=str(spec.transcript_path),
        cli=f"{spec.cli.path} ({spec.cli.rule})",
        cwd=str(spec.cwd),
        worktree=str(tree.path) if tree else None,
        branch=tree.branch if tree else None,
        base=tree.base if tree else None,
    )


class Registry:
    """Workers by id, oldest first. Each owner (an MCP session) sees only its own: another's is unknown."""

    def __init__(self) -> None:
        self._workers: dict[str, Worker] = {}

    def __iter__(self) -> Iterator[Worker]:
        return iter(list(self._workers.values()))

    def add(self, worker: Worker) -> None:
        self._workers[worker.result.worker_id] = worker
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
        return [WorkerLine.of(w.result) for w in reversed(self._workers.values()) if w.owner == owner]

    def queued(self) -> int:
        return sum(1 for w in self._workers.values() if w.result.status == "queued")

    def turn_running(self, tree: worktree.Worktree, other_than: Worker | None = None) -> bool:
        """Whether a worker (other than `other_than`) is still at work in `tree`."""
        return any(w.worktree == tree and not w.done.is_set() and w is not other_than for w in self._workers.values())

    def forget_worktree(self, tree: worktree.Worktree) -> None:
        """`tree` is gone: no worker names it any more."""
        for worker in self._workers.values():
            if worker.worktree == tree:
                worker.worktree = None
                worker.result.worktree = worker.result.branch = None

    def _prune(self) -> None:
        """Forget the oldest finished workers past MAX_HISTORY (they stay in the spawn log)."""
        finished = [key for key, w in self._workers.items() if w.done.is_set()]
        for key in finished[: max(0, len(finished) - MAX_HISTORY)]:
            del self._workers[key]
