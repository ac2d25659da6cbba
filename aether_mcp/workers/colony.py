"""Many workers: their lifecycle from a request to a logged result, under one concurrency limit and its queue.

A Colony lives as long as the server (or one CLI command). Every worker runs
in the colony's task group, so when the colony closes (stdin closed, SIGTERM)
every worker it started is killed with its whole process group.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from ..errors import AetherError
from ..profile.catalog import CasteCatalog
from ..profile.schema import ModelMetadata
from ..profile.store import ProfileStore
from . import worktree
from .leases import Leases
from .preflight import Preflight, ProxyChecker
from .process import RunOutcome, finish_process, kill_group_now, killed_on_sigterm, run_worker
from .proof import settle
from .publish import Publisher, task_head
from .registry import Registry, Worker, queued_result
from .request import SpawnRequest, check_output_schema, check_task, check_timeout
from .result import WorkerLine, WorkerResult
from .secrets import redact, worker_secrets
from .spawn_log import append_entry, forget_running, log_path
from .spec import WorkerSpec, build_spec, new_worker_id, transcript_path
from .stream import StreamSummary
from .warm import WarmPool, warm_counts

if TYPE_CHECKING:
    from .gateway import Lease

log = logging.getLogger("aether_mcp")

PRESTART_DELAY_S = 0.25
# How long closing waits for its workers to be killed and logged before it stops waiting.
SHUTDOWN_S = 15.0


class Colony:
    """The workers of one server, under one concurrency limit."""

    def __init__(
        self, store: ProfileStore, environ: Mapping[str, str] | None = None, checker: ProxyChecker | None = None
    ) -> None:
        self.store = store
        self.state_dir = store.state_dir
        self._group: TaskGroup | None = None
        self._environ = dict(os.environ if environ is None else environ)
        self._checker = checker or ProxyChecker()
        self._workers = Registry()
        self._limit: anyio.Semaphore | None = None
        self._leases = Leases()
        self._warm = WarmPool(self._environ, self._leases, self._metadata)
        self._signals = ExitStack()
        self._publisher = Publisher(self.state_dir, store.cwd)

    async def __aenter__(self) -> Colony:
        self._group = await anyio.create_task_group().__aenter__()
        self._signals.enter_context(killed_on_sigterm(self.kill_all_now))
        self._group.start_soon(self._prestart_warm_workers)  # in the background: serving starts at once
        self._group.start_soon(self._publisher.run)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._signals.close()
        await self.close()
        await self._warm.close()
        await self._leases.close()
        assert self._group is not None
        self._group.cancel_scope.cancel()  # idle reapers and refills; workers are already done
        await self._group.__aexit__(None, None, None)
        self._group = None

    # --- starting ------------------------------------------------------------

    async def spawn(self, request: SpawnRequest, owner: str = "") -> Worker:
        """Check everything a worker needs, then start it (or queue it). Refusals raise before anything runs.

        `owner` is who may see and stop the worker (an MCP session); workers of other owners stay hidden."""
        catalog = await self._admit()
        # git (the project's top) and the agents' files: off the loop that carries every worker's stream
        draft = await anyio.to_thread.run_sync(
            lambda: build_spec(catalog, request, home=self.store.cwd, environ=self._environ)
        )
        preflight = await self._checker.before_spawn(draft.settings, draft.model)
        # The key before the worktree: a gateway that cannot start leaves nothing behind.
        url, key, lease = await self._lease(draft)
        try:
            tree, cwd = None, draft.cwd
            if draft.isolation == "worktree":
                tree, cwd = await anyio.to_thread.run_sync(
                    worktree.create_for, draft.cwd, self.store.cwd, draft.worker_id, request.base
                )
            spec = draft.placed(cwd=cwd, gateway_url=url, gateway_key=key)
        except BaseException:
            self._leases.release(key)
            raise
        return self._start(spec, catalog, preflight, owner, tree=tree, lease=lease)

    async def continue_worker(
        self,
        worker_id: str,
        message: str,
        *,
        timeout_s: float | None = None,
        output_schema: dict[str, Any] | None = None,
        owner: str = "",
    ) -> Worker:
        """A follow-up turn in a finished worker's conversation: same caste, model, directory and permissions."""
        previous = self._workers.get(worker_id, owner)
        if not previous.done.is_set():
            raise AetherError(f"Worker '{worker_id}' is still {previous.result.status}.", "Wait for it with get_worker")
        if previous.result.session_id is None:
            raise AetherError(f"Worker '{worker_id}' has no conversation to continue (its CLI never started one).")
        if previous.worktree is None and not previous.spec.cwd.is_dir():
            raise AetherError(f"Worker '{worker_id}' worked in {previous.spec.cwd}, which is gone (discarded?).")
        if previous.worktree is not None and self._workers.turn_running(previous.worktree):
            raise AetherError(f"Another turn is running in the worktree of '{worker_id}'.", "Wait for it to finish")
        check_task(message)
        catalog = await self._admit()
        turn_id = new_worker_id(previous.result.caste)
        # The earlier turn's endpoint, token and permissions, whatever the profile says now.
        settings = previous.spec.settings
        if check_timeout(timeout_s) is not None:
            settings = settings.model_copy(update={"timeout_s": timeout_s})
        draft = replace(
            previous.spec,
            worker_id=turn_id,
            task=message,
            transcript_path=transcript_path(self.store.cwd, turn_id),
            resume=previous.result.session_id,
            output_schema=check_output_schema(output_schema) if output_schema is not None else None,
            settings=settings,
            gateway_url=None,
            gateway_key=None,
        )
        preflight = await self._checker.before_spawn(draft.settings, draft.model)
        if previous.worktree is not None:
            await anyio.to_thread.run_sync(worktree.restore, previous.worktree)
        url, key, lease = await self._lease(draft)
        spec = draft.placed(gateway_url=url, gateway_key=key)
        follows = (worker_id, previous.result.turn + 1)
        return self._start(spec, catalog, preflight, owner, tree=previous.worktree, lease=lease, follows=follows)

    async def discard(self, worker_id: str, owner: str = "") -> Worker:
        """Drop a finished worker's worktree and branch, whatever they hold."""
        worker = self._workers.get(worker_id, owner)
        if not worker.done.is_set():
            raise AetherError(f"Worker '{worker_id}' is still {worker.result.status}.", "Cancel it first")
        tree = worker.worktree
        if tree is None:
            raise AetherError(f"Worker '{worker_id}' has no worktree to discard.")
        if self._workers.turn_running(tree):
            raise AetherError(f"A follow-up of '{worker_id}' is still running in its worktree.", "Cancel it first")
        await anyio.to_thread.run_sync(worktree.remove, tree)
        self._workers.forget_worktree(tree)
        return worker

    async def _admit(self) -> CasteCatalog:
        """The castes of the trusted profile, when the colony can take one more worker."""
        if self._group is None:
            raise AetherError("The colony is closed; no more workers can start.")
        # Parsed again only when the profile or an agent file changed, and then off the loop, as git is.
        catalog: CasteCatalog = await anyio.to_thread.run_sync(lambda: self.store.catalog(trusted=True))
        waiting = self._workers.queued()
        if waiting >= catalog.profile.workers.max_queued_workers:
            raise AetherError(
                f"{waiting} workers are already queued, the most workers.max_queued_workers allows.",
                "Wait for some to finish, or cancel some",
            )
        return catalog

    def _metadata(self) -> dict[str, ModelMetadata]:
        return self.store.load()[0].model_metadata or {}

    async def _lease(self, spec: WorkerSpec) -> tuple[str | None, str | None, Lease | None]:
        """A proxied worker talks to the gateway with a key of its own; the real token stays here."""
        if not spec.settings.endpoint:
            return None, None, None
        assert self._group is not None
        url = await self._leases.url(self._group)
        key, lease = self._leases.lease(spec, self._metadata())
        return url, key, lease

    def _start(
        self,
        spec: WorkerSpec,
        catalog: CasteCatalog,
        preflight: Preflight | None,
        owner: str,
        *,
        tree: worktree.Worktree | None,
        lease: Lease | None,
        follows: tuple[str, int] | None = None,
    ) -> Worker:
        """Queue the worker of `spec` (with `follows`: the turn it is of the worker it continues)."""
        assert self._group is not None
        self._warm.counts = warm_counts(catalog)  # as the profile says now
        worker = Worker(queued_result(spec, tree), spec, preflight, owner, tree=tree, lease=lease)
        if follows is not None:
            worker.result.continues, worker.result.turn = follows
        # Redacted whole, then cut: a secret across the cut would leave its first characters behind.
        worker.task_head = task_head(redact(spec.task, worker_secrets(spec.settings, self._environ)) or "")
        if lease is not None:
            lease.on_change = lambda: self._publisher.touch(worker)
        self._workers.add(worker)
        self._publisher.publish(worker)  # noted before it runs: a server killed outright leaves it as interrupted
        if self._limit is None:
            self._limit = anyio.Semaphore(catalog.profile.workers.max_concurrent_workers)
        self._group.start_soon(self._run, worker)
        return worker

    async def _prestart_warm_workers(self) -> None:
        """Warm workers for the castes the profile asks for, ready for the session's first wave. It waits a
        moment first: the server answers its client's handshake and tools/list before it starts CLIs."""
        await anyio.sleep(PRESTART_DELAY_S)
        try:
            catalog = await self._admit()
        except AetherError as exc:  # a spawn will report the same problem when it happens
            log.warning("no warm workers: %s", exc)
            return
        assert self._group is not None
        await self._warm.prestart(self._group, catalog, self.store.cwd)

    async def _run(self, worker: Worker) -> None:
        """Run one worker to its end. Whatever goes wrong ends this worker as failed, and nothing else."""
        try:
            await self._run_one(worker)
        except Exception as exc:  # noqa: BLE001 (one worker's fault must not end the colony's task group)
            log.warning("worker %s could not run: %s: %s", worker.result.worker_id, type(exc).__name__, exc)
            if not worker.done.is_set():
                worker.worktree = None  # left as it is, for the user to look at
                with anyio.CancelScope(shield=True):
                    await self._finish(worker, None, failure=f"The worker could not run: {exc}")

    async def _run_one(self, worker: Worker) -> None:
        assert self._limit is not None
        outcome: RunOutcome | None = None
        with worker.scope:
            async with self._limit:
                worker.result.status = "running"
                worker.result.started_at = _now()
                self._publisher.publish(worker)
                worker.notify()
                warm, worker.spec = self._warm.take(worker.spec, worker.lease)
                worker.result.warm = warm is not None
                outcome = await run_worker(
                    worker.spec,
                    self._environ,
                    on_progress=lambda s: self._progress(worker, s),
                    on_started=worker.set_pid,
                    warm_process=warm.process if warm is not None else None,
                )
                try:
                    await self._finish(worker, outcome)  # the result is out as soon as the stream gives it
                finally:
                    with anyio.CancelScope(shield=True):
                        await finish_process(outcome.process)
                worker.pid = None  # its group is gone: nothing left for kill_all_now to signal
                # Refill only now: a CLI starting beside a running worker, or before its answer is
                # sent, takes the CPU and the event loop they need.
                self._refill(worker)
        if outcome is None:  # cancelled before the worker answered
            with anyio.CancelScope(shield=True):
                await self._finish(worker, None)

    def _refill(self, worker: Worker) -> None:
        spec = worker.spec
        usual = worker.result.model_source != "explicit" and spec.cwd == self.store.cwd
        usual = usual and spec.output_schema is None and spec.resume is None
        if self._group is not None:
            self._warm.refill(self._group, spec, taken=worker.result.warm, usual=usual)

    def _progress(self, worker: Worker, summary: StreamSummary) -> None:
        worker.turns, worker.last_tool = summary.turns, summary.last_tool
        worker.notify()
        self._publisher.touch(worker)

    async def _finish(self, worker: Worker, outcome: RunOutcome | None, failure: str | None = None) -> None:
        result = worker.result
        secrets = worker_secrets(worker.spec.settings, self._environ)
        result.finished_at = _now()
        self._leases.release(worker.spec.gateway_key)  # the key is refused from now on
        if outcome is not None:
            worker.answer = settle(result, worker.spec, outcome, worker.preflight, secrets, lease=worker.lease)
        elif failure is not None:
            result.status, result.error = "failed", redact(failure, secrets)
        else:
            result.status = "cancelled"
            result.error = "Cancelled before it finished; the worker and its process group were killed."
        worker.spec = replace(worker.spec, task="")  # the history keeps what ran and how it went, not what it was told
        tree = worker.worktree
        if tree is not None:
            in_use = self._workers.turn_running(tree, other_than=worker)
            await anyio.to_thread.run_sync(lambda: worktree.settle(tree, result, in_use=in_use))  # git, off the loop
        self._publisher.publish(worker)  # its details, with the evidence
        self._log(result)
        worker.done.set()
        worker.notify()

    def _log(self, result: WorkerResult) -> None:
        """In place of a finished worker's note, one JSON line in the spawn log: what ran, on which model,
        whether proven."""
        try:
            append_entry(log_path(self.state_dir), self.store.cwd, result.log_entry())
            forget_running(self.state_dir, result.worker_id)
        except (AetherError, OSError) as exc:  # the worker's own result stands; only this record of it is lost
            log.warning("worker record not written: %s", exc)

    # --- looking and stopping --------------------------------------------------

    def get(self, worker_id: str, owner: str = "") -> Worker:  # (the registry says how owners see workers)
        return self._workers.get(worker_id, owner)

    def list(self, owner: str = "") -> list[WorkerLine]:
        return self._workers.lines(owner)

    def warm_waiting(self) -> int:
        """How many warm workers wait for a task now."""
        return self._warm.waiting()

    def cancel(self, worker_id: str, owner: str | None = "") -> Worker:
        worker = self._workers.get(worker_id, owner)
        worker.scope.cancel()
        return worker

    def kill_all_now(self) -> None:
        """From a signal handler: SIGKILL the group of every worker whose process still lives, no waiting.

        That includes a worker that has answered and is still in its grace period to exit."""
        self._warm.kill_all_now()
        for worker in self._workers:
            if worker.pid is not None:
                kill_group_now(worker.pid)

    async def close(self) -> None:
        """Cancel every worker and wait (at most SHUTDOWN_S) until each is dead and logged."""
        for worker in self._workers:
            worker.scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_S):
            for worker in self._workers:
                await worker.done.wait()
        self.kill_all_now()  # whatever did not end in time


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
