"""Many workers: their lifecycle from a request to a logged result, under one concurrency limit and its queue.

A Colony lives as long as the server (or one CLI command). Every worker runs
in the colony's task group, so when the colony closes (stdin closed, SIGTERM)
every worker it started is killed with its whole process group.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import replace

import anyio
from anyio.abc import TaskGroup

from ..errors import AetherError
from ..procs import keep_environment_private
from ..profile.catalog import CasteCatalog
from ..profile.schema import ModelMetadata, RaySection
from ..profile.store import ProfileStore
from . import worktree
from .cluster import RayCluster
from .leases import LOOPBACK, Leases, lease_for
from .preflight import Preflight, ProxyChecker
from .process import RunOutcome, finish_process, kill_group_now, killed_on_sigterm, run_worker
from .proof import judge_outcome
from .publish import Publisher, task_head
from .registry import Registry
from .remote import run_remote_worker
from .request import FollowUpRequest, SpawnRequest
from .result import WorkerLine
from .secrets import redact, worker_secrets
from .spawn_log import append_entry, forget_running, log_path
from .spec import WorkerSpec, build_spec, new_worker_id, transcript_path
from .stream import StreamSummary
from .warm import Warm, WarmPool, warm_counts
from .wire import Key
from .worker import Worker

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
        self._stack = AsyncExitStack()
        self._environ = dict(os.environ if environ is None else environ)
        self._checker = checker or ProxyChecker()
        self._workers = Registry()
        self._limit: anyio.Semaphore | None = None
        self._leases = Leases()
        self._cluster: RayCluster | None = None  # the Ray cluster remote workers run on, once one is asked for
        self._warm = WarmPool(self._environ, self._leases, self._metadata)
        self._publisher = Publisher(self.state_dir, store.cwd)

    async def __aenter__(self) -> Colony:
        keep_environment_private()
        async with AsyncExitStack() as stack:  # a failure while starting leaves nothing behind
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._shut_down, group)  # before the group is left: it waits for nothing
            stack.enter_context(killed_on_sigterm(self.kill_all_now))
            group.start_soon(self._prestart_warm_workers, group)  # in the background: serving starts at once
            group.start_soon(self._publisher.run)
            self._group = group
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _shut_down(self, group: TaskGroup) -> None:
        await self.close()
        await self._warm.close()
        await self._leases.close()
        if self._cluster is not None:
            await anyio.to_thread.run_sync(self._cluster.close)
        self._group = None
        group.cancel_scope.cancel()  # idle reapers and refills; workers are already done

    # --- starting ------------------------------------------------------------

    async def spawn(self, request: SpawnRequest, owner: str = "") -> Worker:
        """Check everything a worker needs, then start it (or queue it). Refusals raise before anything runs.

        `owner` is who may see and stop the worker (an MCP session); workers of other owners stay hidden."""
        catalog = await self._admit()
        # git (the project's top) and the agents' files: off the loop that carries every worker's stream
        draft = await anyio.to_thread.run_sync(
            lambda: build_spec(catalog, request, server_dir=self.store.cwd, environ=self._environ)
        )
        preflight = await self._checker.before_spawn(draft.settings, draft.model)
        # The gateway before the worktree: a gateway that cannot start leaves nothing behind.
        url = await self._gateway_url(draft)
        tree, cwd = None, draft.cwd
        if draft.isolation == "worktree":
            tree, cwd = await anyio.to_thread.run_sync(
                worktree.create_for, draft.cwd, self.store.cwd, draft.worker_id, request.base
            )
        spec = draft.placed(cwd=cwd, gateway_url=url)
        return self._start(spec, catalog, preflight, owner, tree=tree)

    async def continue_worker(self, request: FollowUpRequest, owner: str = "") -> Worker:
        """A follow-up turn in a finished worker's conversation: same caste, model, directory and permissions."""
        worker_id = request.worker_id
        previous = self._workers.get(worker_id, owner)
        if not previous.done.is_set():
            raise AetherError(f"Worker '{worker_id}' is still {previous.status}.", "Wait for it with get_worker")
        if previous.session_id is None:
            raise AetherError(f"Worker '{worker_id}' has no conversation to continue (its CLI never started one).")
        if previous.spec.cluster is not None:
            raise AetherError(
                f"Worker '{worker_id}' ran on a Ray node, and its conversation ended there with it",
                "Spawn a new worker (its branch holds what it committed)",
            )
        tree = previous.worktree
        if tree is None and not previous.spec.cwd.is_dir():
            raise AetherError(f"Worker '{worker_id}' worked in {previous.spec.cwd}, which is gone (discarded?).")
        if tree is not None and self._workers.turn_running(tree):
            raise AetherError(f"Another turn is running in the worktree of '{worker_id}'.", "Wait for it to finish")
        catalog = await self._admit()
        turn_id = new_worker_id(previous.spec.caste)
        # The earlier turn's endpoint, token and permissions, whatever the profile says now.
        settings = previous.spec.settings
        if request.timeout_s is not None:
            settings = settings.model_copy(update={"timeout_s": request.timeout_s})
        draft = replace(
            previous.spec,
            worker_id=turn_id,
            task=request.message,
            transcript_path=transcript_path(self.store.cwd, turn_id),
            resume=previous.session_id,
            output_schema=request.output_schema,
            settings=settings,
        )
        preflight = await self._checker.before_spawn(draft.settings, draft.model)
        if tree is not None:
            await anyio.to_thread.run_sync(worktree.restore, tree)
        spec = draft.placed(gateway_url=await self._gateway_url(draft))
        follows = (worker_id, previous.turn + 1)
        return self._start(spec, catalog, preflight, owner, tree=tree, follows=follows)

    async def discard(self, worker_id: str, owner: str = "") -> Worker:
        """Drop a finished worker's worktree and branch, whatever they hold."""
        worker = self._workers.get(worker_id, owner)
        if not worker.done.is_set():
            raise AetherError(f"Worker '{worker_id}' is still {worker.status}.", "Cancel it first")
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

    async def _gateway_url(self, spec: WorkerSpec) -> str | None:
        """A proxied worker talks to the gateway, with a key of its own; the real token stays here. A remote
        worker's gateway listens where the cluster's nodes reach this machine: reaching the cluster's head tells
        where, and a cluster that cannot be reached fails the spawn here, at once."""
        if not spec.proxied:
            return None
        host = LOOPBACK
        if spec.cluster is not None:
            cluster = self._cluster_for(spec.cluster)
            host = await anyio.to_thread.run_sync(lambda: cluster.gateway_host)  # a connection to the head
        if self._group is None:
            raise AetherError("The colony is closed; no more workers can start.")
        return self._leases.start_gateway(self._group, host)

    def _cluster_for(self, settings: RaySection) -> RayCluster:
        """The colony's one cluster. One server connects to one cluster: another address needs a restart."""
        if self._cluster is None or self._cluster.settings.address != settings.address:
            if self._cluster is not None and self._cluster.connected:
                raise AetherError(
                    f"This server runs workers on the Ray cluster at {self._cluster.settings.address}; the profile "
                    f"now names {settings.address}",
                    "Restart the server to move its remote workers",
                )
            self._cluster = RayCluster(settings, self._environ)
        self._cluster.settings = settings  # the nodes' CLI and what a worker takes of a node, as the profile says now
        return self._cluster

    def _start(
        self,
        spec: WorkerSpec,
        catalog: CasteCatalog,
        preflight: Preflight | None,
        owner: str,
        *,
        tree: worktree.Worktree | None,
        follows: tuple[str, int] | None = None,
    ) -> Worker:
        """Queue the worker of `spec` (with `follows`: the turn it is of the worker it continues)."""
        assert self._group is not None
        self._warm.counts = warm_counts(catalog)  # as the profile says now
        lease = lease_for(spec, self._metadata()) if spec.proxied else None
        # Redacted whole, then cut: a secret across the cut would leave its first characters behind.
        head = task_head(redact(spec.task, worker_secrets(spec.settings, self._environ)) or "")
        worker = Worker(spec, preflight, owner, tree=tree, lease=lease, follows=follows, task_head=head)
        if lease is not None:
            lease.on_change = lambda: self._publisher.touch(worker)
        self._workers.add(worker)
        self._publisher.publish(worker)  # noted before it runs: a server killed outright leaves it as interrupted
        if self._limit is None:
            self._limit = anyio.Semaphore(catalog.profile.workers.max_concurrent_workers)
        self._group.start_soon(self._run, worker)
        return worker

    async def _prestart_warm_workers(self, group: TaskGroup) -> None:
        """Warm workers for the castes the profile asks for, ready for the session's first wave. It waits a
        moment first: the server answers its client's handshake and tools/list before it starts CLIs."""
        await anyio.sleep(PRESTART_DELAY_S)
        try:
            catalog = await self._admit()
        except AetherError as exc:  # a spawn will report the same problem when it happens
            log.warning("no warm workers: %s", exc)
            return
        await self._warm.prestart(group, catalog, self.store.cwd)

    async def _run(self, worker: Worker) -> None:
        """Run one worker to its end. Whatever goes wrong ends this worker as failed, and nothing else."""
        try:
            await self._run_one(worker)
        except Exception as exc:  # noqa: BLE001 (one worker's fault must not end the colony's task group)
            log.warning("worker %s could not run: %s: %s", worker.worker_id, type(exc).__name__, exc)
            if not worker.done.is_set():
                with anyio.CancelScope(shield=True):
                    if worker.live:  # its worktree is left as it is, for the user to look at
                        secrets = worker_secrets(worker.spec.settings, self._environ)
                        worker.fail(redact(f"The worker could not run: {exc}", secrets) or "")
                    await self._record(worker)

    async def _run_one(self, worker: Worker) -> None:
        assert self._limit is not None
        outcome: RunOutcome | None = None
        with worker.scope:
            async with self._limit:
                spec = worker.spec
                warm = self._warm.take(spec) if spec.cluster is None else None
                key = self._key_for(worker, warm)
                worker.start(warm=warm is not None, key=key)
                self._publisher.publish(worker)
                worker.notify()
                if spec.cluster is not None:
                    assert key is not None  # a remote worker goes through the gateway (build_spec)
                    outcome = await run_remote_worker(
                        spec,
                        self._environ,
                        self._cluster_for(spec.cluster),
                        key=key.value,
                        tree=worker.tree,
                        on_progress=lambda s: self._progress(worker, s),
                        on_node=lambda node: self._placed(worker, node),
                    )
                    await self._finish(worker, outcome)
                    return
                outcome = await run_worker(
                    worker.spec,
                    self._environ,
                    key=key.value if key is not None else None,
                    on_progress=lambda s: self._progress(worker, s),
                    on_started=worker.set_pid,
                    warm_process=warm.process if warm is not None else None,
                )
                try:
                    await self._finish(worker, outcome)  # the result is out as soon as the stream gives it
                finally:
                    with anyio.CancelScope(shield=True):
                        assert outcome.process is not None  # a local run's
                        await finish_process(outcome.process)
                worker.pid = None  # its group is gone: nothing left for kill_all_now to signal
                # Refill only now: a CLI starting beside a running worker, or before its answer is
                # sent, takes the CPU and the event loop they need.
                self._refill(worker)
        if outcome is None:  # cancelled before the worker answered
            with anyio.CancelScope(shield=True):
                await self._finish(worker, None)

    def _key_for(self, worker: Worker, warm: Warm | None) -> Key | None:
        """The key a starting worker holds at the gateway: the warm process's it takes, or a new one."""
        if worker.lease is None:
            return None
        if warm is not None and warm.key is not None:
            warm.key.carry(worker.lease)
            return warm.key
        return self._leases.issue(worker.lease)

    def _refill(self, worker: Worker) -> None:
        spec = worker.spec
        usual = worker.spec.model_source != "explicit" and spec.cwd == self.store.cwd
        usual = usual and spec.output_schema is None and spec.resume is None
        if self._group is not None:
            self._warm.refill(self._group, spec, taken=worker.warm, usual=usual)

    def _placed(self, worker: Worker, node: str) -> None:
        worker.placed_on(node)
        self._publisher.touch(worker)

    def _progress(self, worker: Worker, summary: StreamSummary) -> None:
        worker.progressed(summary.turns, summary.last_tool)
        self._publisher.touch(worker)

    async def _finish(self, worker: Worker, outcome: RunOutcome | None) -> None:
        """End the worker as its run went (None: cancelled), settle its worktree, and record it."""
        if outcome is not None:
            secrets = worker_secrets(worker.spec.settings, self._environ)
            worker.settle(judge_outcome(worker.spec, outcome, worker.preflight, secrets, worker.lease))
        else:
            worker.cancel()
        tree = worker.tree
        if tree is not None:
            in_use = self._workers.turn_running(tree, other_than=worker)
            outcome_of_tree = await anyio.to_thread.run_sync(lambda: worktree.conclude(tree, in_use=in_use))
            worker.conclude_tree(outcome_of_tree)  # git, off the loop
        await self._record(worker)

    async def _record(self, worker: Worker) -> None:
        """An ended worker's last records: its details with the evidence, and its spawn-log line."""
        self._publisher.publish(worker)
        self._log(worker)
        worker.done.set()
        worker.notify()

    def _log(self, worker: Worker) -> None:
        """In place of a finished worker's note, one JSON line in the spawn log: what ran, on which model,
        whether proven."""
        try:
            append_entry(log_path(self.state_dir), self.store.cwd, worker.record().log_entry())
            forget_running(self.state_dir, worker.worker_id)
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
