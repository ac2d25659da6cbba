"""One worker's life: its state, the named steps that move it, and the record built from it.

This module is the one owner of a worker's state. A worker is queued when it
is made, and moves only by these steps, each of which checks where it comes
from:

    queued  --start-->   running
    queued | running  --settle (running only) | fail | cancel-->  a final status
    final   --conclude_tree-->  (what its worktree holds; the tree may be gone)
    final   --remove_worktree-->  (its worktree was discarded)

The step that ends a worker (settle, fail or cancel) releases its gateway key.
The record that tools, listings, the spawn log and the live notes show is built
by `record()` from the state, and nowhere else.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import anyio

from ..errors import sentences
from ..hook_settings import collect_call
from .preflight import Preflight
from .proof import OUTPUT_PAGE, Settlement, WireTally, page, tally
from .result import LIVE, Status, WorkerLine, WorkerResult
from .spec import WorkerSpec
from .wire import Key, Lease
from .worktree import TreeOutcome, Worktree

CANCELLED = "Cancelled before it finished; the worker and its process group were killed."


class WorkerStateError(RuntimeError):
    """A step asked of a worker in a state it cannot come from: a fault in aether-mcp, not the user's."""


class Worker:
    """A worker's live state inside the colony."""

    def __init__(
        self,
        spec: WorkerSpec,
        preflight: Preflight | None,
        owner: str,
        *,
        tree: Worktree | None = None,
        lease: Lease | None = None,
        follows: tuple[str, int] | None = None,
        task_head: str = "",
    ) -> None:
        self.spec = spec
        self.owner = owner  # who may see and stop it (an MCP session)
        self.preflight = preflight
        self.lease = lease  # its route at the gateway: the requests it made, its budget
        self.tree = tree
        self.continues: str | None = follows[0] if follows is not None else None
        self.turn = follows[1] if follows is not None else 1
        self.task_head = task_head  # the first lines of its task, redacted: what others are shown of it
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()  # set once it has ended and its record is written
        self.changed = anyio.Event()
        self.pid: int | None = None
        self.node: str | None = None  # a remote worker's Ray node, once it is placed
        self.turns = 0
        self.last_tool: str | None = None
        self._status: Status = "queued"
        self._key: Key | None = None
        self._warm = False
        self._started_at: str | None = None
        self._finished_at: str | None = None
        self._settlement: Settlement | None = None
        self._error: str | None = None
        self._tree_outcome: TreeOutcome | None = None

    # --- what it is ------------------------------------------------------------------------------------------

    @property
    def worker_id(self) -> str:
        return self.spec.worker_id

    @property
    def status(self) -> Status:
        return self._status

    @property
    def live(self) -> bool:
        return self._status in LIVE

    @property
    def warm(self) -> bool:
        return self._warm

    @property
    def session_id(self) -> str | None:
        """The CLI session its conversation continues in (None until it has settled)."""
        return self._settlement.session_id if self._settlement is not None else None

    @property
    def worktree(self) -> Worktree | None:
        """Its worktree while it exists."""
        removed = self._tree_outcome is not None and self._tree_outcome.removed
        return None if removed else self.tree

    # --- the steps -------------------------------------------------------------------------------------------

    def start(self, *, warm: bool, key: Key | None) -> None:
        """It leaves the queue and runs: in a warm process or a new one, with its key at the gateway."""
        self._move(("queued",), "running")
        self._started_at = _now()
        self._warm, self._key = warm, key

    def settle(self, settlement: Settlement) -> None:
        """It ran to an end, judged."""
        self._move(("running",), settlement.status)
        self._settlement = settlement
        self._error = settlement.error
        self._end()

    def fail(self, reason: str) -> None:
        """It could not run (or its run could not be judged); `reason` is redacted already."""
        self._move(LIVE, "failed")
        self._error = reason
        self._end()

    def cancel(self) -> None:
        """It was stopped before it finished, with its process group."""
        self._move(LIVE, "cancelled")
        self._error = CANCELLED
        self._end()

    def conclude_tree(self, outcome: TreeOutcome) -> None:
        """What it left in its worktree, read once it has ended."""
        if self.live or self.tree is None or self._tree_outcome is not None:
            raise WorkerStateError(f"worker {self.worker_id}: its worktree cannot be concluded now ({self._status})")
        self._tree_outcome = outcome

    def remove_worktree(self) -> None:
        """Its worktree (shared with its follow-ups) was discarded."""
        if self.live or self.tree is None:
            raise WorkerStateError(f"worker {self.worker_id}: no worktree to remove ({self._status})")
        self._tree_outcome = replace(self._tree_outcome or TreeOutcome([], None, removed=True), removed=True)

    def _move(self, sources: tuple[Status, ...], target: Status) -> None:
        if self._status not in sources:
            raise WorkerStateError(f"worker {self.worker_id} cannot go from {self._status} to {target}")
        self._status = target

    def _end(self) -> None:
        """What every ending does: its key is refused from now on, and its task text is dropped (the history
        keeps what ran and how it went, not what it was told)."""
        self._finished_at = _now()
        if self._key is not None:
            self._key.release()
            self._key = None
        self.spec = replace(self.spec, task="")

    # --- news ------------------------------------------------------------------------------------------------

    def set_pid(self, pid: int) -> None:
        self.pid = pid

    def placed_on(self, node: str) -> None:
        """A remote worker's task started on `node`."""
        self.node = node
        self.notify()

    def progressed(self, turns: int, last_tool: str | None) -> None:
        self.turns, self.last_tool = turns, last_tool
        self.notify()

    def notify(self) -> None:
        """Wake whoever waits for news of this worker (progress, start, end)."""
        previous, self.changed = self.changed, anyio.Event()
        previous.set()

    async def news(self, timeout_s: float | None = None) -> None:
        """Wait until the worker changes (a turn, its start, its end), or `timeout_s` passes."""
        changed = self.changed
        with anyio.move_on_after(timeout_s):
            await changed.wait()

    # --- the record ------------------------------------------------------------------------------------------

    def line(self) -> WorkerLine:
        return WorkerLine.of(self.record())

    def record(self, offset: int = 0, limit: int = OUTPUT_PAGE) -> WorkerResult:
        """The worker as tools, listings, the spawn log and the notes show it, with its answer from `offset`
        (at most `limit` characters). While it runs, the wire's figures are those counted so far."""
        spec, settled = self.spec, self._settlement
        wire = settled.verdict.wire if settled is not None else self._live_tally()
        tree, outcome = self.worktree, self._tree_outcome
        answer = settled.answer if settled is not None else None
        return WorkerResult(
            worker_id=spec.worker_id,
            caste=spec.caste,
            description=spec.description,
            model=spec.model,
            model_source=spec.model_source,
            status=self._status,
            output=page(answer, offset, limit),
            output_offset=offset,
            output_chars=len(answer) if answer is not None else None,
            structured_output=settled.structured_output if settled is not None else None,
            models_reported=settled.models_reported if settled is not None else [],
            routing_verified=settled.verdict.verified if settled is not None else False,
            routing_evidence=settled.verdict.evidence if settled is not None else [],
            routing_mismatches=settled.verdict.mismatches if settled is not None else [],
            requests_by_model=wire.by_model if wire is not None else {},
            requests_by_deployment=wire.by_deployment if wire is not None else {},
            duration_s=settled.duration_s if settled is not None else None,
            num_turns=settled.num_turns if settled is not None else None,
            usage=settled.usage if settled is not None else None,
            requests=wire.requests if wire is not None else None,
            tokens=wire.tokens if wire is not None else None,
            cost_usd=settled.cost_usd if settled is not None else (wire.cost_usd if wire is not None else None),
            served_by=wire.served_by if wire is not None else [],
            fallback_used=wire.fallback_used if wire is not None else [],
            session_id=self.session_id,
            transcript_path=str(spec.transcript_path),
            cli=f"{spec.cli.path} ({spec.cli.rule})",
            warm=self._warm,
            cwd=str(spec.cwd),
            node=self.node,
            worktree=str(tree.path) if tree is not None else None,
            branch=tree.branch if tree is not None else None,
            base=self.tree.base if self.tree is not None else None,
            commits=outcome.commits if outcome is not None else [],
            diffstat=outcome.diffstat if outcome is not None else None,
            continues=self.continues,
            turn=self.turn,
            started_at=self._started_at,
            finished_at=self._finished_at,
            error=self._error if outcome is None or outcome.error is None else sentences(self._error, outcome.error),
            # While it runs, the exact call that collects it, so that no model has to compose it.
            next_call=collect_call(spec.worker_id) if self.live else None,
        )

    def _live_tally(self) -> WireTally | None:
        """The wire's figures so far, counted (not judged) while the worker runs."""
        if self.lease is None:
            return None
        deployments = self.preflight.deployments if self.preflight is not None else None
        return tally(self.lease, deployments, self.spec.model)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
