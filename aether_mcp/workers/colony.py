"""Many workers: ids, the concurrency limit and its queue, cancel, shutdown, the spawn log.

A Colony lives as long as the server (or one CLI command). Every worker runs
in the colony's task group, so when the colony closes (stdin closed, SIGTERM)
every worker it started is killed with its whole process group.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

import anyio
from anyio.abc import TaskGroup

from ..errors import AetherError, UnknownCasteError, sentences
from ..profile.catalog import CasteCatalog
from ..profile.schema import ModelMetadata
from ..profile.store import ProfileStore
from . import worktree
from .preflight import Preflight, ProxyChecker
from .process import RunOutcome, finish_process, kill_group_now, run_worker
from .proof import check_output_schema, page, settle
from .result import WorkerLine, WorkerResult
from .secrets import redact, worker_secrets
from .spawn_log import append_entry, log_path
from .spec import WorkerSpec, build_spec, check_timeout, new_worker_id, transcript_path
from .stream import StreamSummary
from .warm import WarmPool

if TYPE_CHECKING:
    from .gateway import Gateway, Lease, Prices

log = logging.getLogger("aether_mcp")

Isolation = Literal["none", "worktree"]
PRESTART_DELAY_S = 1.0
MAX_TASK_BYTES = 1024 * 1024
MAX_BUDGET_USD = 10_000.0
MAX_TOKENS = 1_000_000_000
# Finished workers kept for get_worker and list_workers (their task text is dropped when they finish).
MAX_HISTORY = 200
# How long closing waits for its workers to be killed and logged before it stops waiting.
SHUTDOWN_S = 15.0
# What the spawn log keeps of a result: enough to answer "which model did it use?", not the output.
LOG_FIELDS = {
    "worker_id",
    "caste",
    "model",
    "model_source",
    "status",
    "routing_verified",
    "models_reported",
    "duration_s",
    "usage",
    "requests",
    "tokens",
    "cost_usd",
    "served_by",
    "fallback_used",
    "started_at",
    "finished_at",
    "cwd",
    "transcript_path",
    "continues",
    "turn",
    "branch",
    "commits",
}


class Worker:
    """A worker's live state inside the colony."""

    def __init__(self, result: WorkerResult, spec: WorkerSpec, preflight: Preflight | None, owner: str) -> None:
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
        self.worktree: worktree.Worktree | None = None
        self.answer: str | None = None  # the whole answer, redacted; result.output holds its first page
        self.lease: Lease | None = None  # its key at the gateway, and the requests it made there

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


class Colony:
    """The workers of one server, under one concurrency limit."""

    def __init__(
        self, store: ProfileStore, environ: Mapping[str, str] | None = None, checker: ProxyChecker | None = None
    ) -> None:
        self.store = store
        self._group: TaskGroup | None = None
        self._environ = dict(os.environ if environ is None else environ)
        self._checker = checker or ProxyChecker()
        self._workers: dict[str, Worker] = {}
        self._limit: anyio.Semaphore | None = None
        self._previous_sigterm: SignalHandler = None
        self._gateway: Gateway | None = None  # made with the first proxied worker
        self._warm = WarmPool(self._environ, self._warm_key_for, self._release_key)
        self._warm_counts: dict[str, int] = {}
        self.state_dir = store.state_dir

    async def __aenter__(self) -> Colony:
        self._group = await anyio.create_task_group().__aenter__()
        self._previous_sigterm = _on_sigterm(self.kill_all_now)
        self._group.start_soon(self._prestart_warm_workers)  # in the background: serving starts at once
        return self

    async def __aexit__(self, *exc: object) -> None:
        _restore_sigterm(self._previous_sigterm)
        await self.close()
        await self._warm.close()
        if self._gateway is not None:
            await self._gateway.close()
        assert self._group is not None
        self._group.cancel_scope.cancel()  # idle reapers and refills; workers are already done
        await self._group.__aexit__(None, None, None)
        self._group = None

    # --- starting ------------------------------------------------------------

    async def spawn(
        self,
        caste: str,
        task: str,
        *,
        cwd: str | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
        isolation: Isolation | None = None,
        base: str | None = None,
        output_schema: dict[str, Any] | None = None,
        owner: str = "",
        max_budget_usd: float | None = None,
        max_tokens: int | None = None,
    ) -> Worker:
        """Check everything a worker needs, then start it (or queue it). Refusals raise before anything runs.

        `owner` is who may see and stop the worker (an MCP session); workers of other owners stay hidden."""
        catalog = self._admit(task)
        spec = self._spec(catalog, caste, task, cwd=cwd, model=model, timeout_s=timeout_s)
        spec.output_schema = check_output_schema(output_schema) if output_schema is not None else None
        spec.settings = spec.settings.model_copy(update=_budget(max_budget_usd, max_tokens))
        if spec.settings.max_tokens is not None and not spec.settings.endpoint:
            raise AetherError(
                f"max_tokens is kept at the gateway, which only workers going through a proxy use, and the "
                f"{spec.caste} caste has none",
                "Give a max_budget_usd instead (the Claude Code CLI keeps that), or route the caste through a proxy",
            )
        isolation = isolation or spec.settings.isolation
        if worktree.check_base(base) is not None and isolation != "worktree":
            raise AetherError("base applies only with isolation 'worktree'.")
        preflight = await self._preflight(spec)
        lease = await self._through_gateway(spec)  # before the worktree: a gateway that cannot start leaves nothing
        tree = None
        if isolation == "worktree":
            try:
                tree = await anyio.to_thread.run_sync(self._worktree_for, spec, base)
            except BaseException:
                self._release_key(spec.gateway_key or "")
                raise
        return self._start(spec, catalog, preflight, owner, tree, lease=lease)

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
        previous = self.get(worker_id, owner)
        if not previous.done.is_set():
            raise AetherError(f"Worker '{worker_id}' is still {previous.result.status}.", "Wait for it with get_worker")
        if previous.result.session_id is None:
            raise AetherError(f"Worker '{worker_id}' has no conversation to continue (its CLI never started one).")
        if previous.worktree is None and not previous.spec.cwd.is_dir():
            raise AetherError(f"Worker '{worker_id}' worked in {previous.spec.cwd}, which is gone (discarded?).")
        if previous.worktree is not None and self._turn_running(previous.worktree):
            raise AetherError(f"Another turn is running in the worktree of '{worker_id}'.", "Wait for it to finish")
        catalog = self._admit(message)
        turn_id = new_worker_id(previous.result.caste)
        # The earlier turn's endpoint, token and permissions, whatever the profile says now.
        settings = previous.spec.settings
        if check_timeout(timeout_s) is not None:
            settings = settings.model_copy(update={"timeout_s": timeout_s})
        spec = replace(
            previous.spec,
            worker_id=turn_id,
            task=message,
            transcript_path=transcript_path(self.store.cwd, turn_id),
            resume=previous.result.session_id,
            output_schema=check_output_schema(output_schema) if output_schema is not None else None,
            settings=settings,
        )
        preflight = await self._preflight(spec)
        if previous.worktree is not None:
            await anyio.to_thread.run_sync(worktree.restore, previous.worktree)
        lease = await self._through_gateway(spec)
        worker = self._start(spec, catalog, preflight, owner, previous.worktree, lease=lease)
        worker.result.continues, worker.result.turn = worker_id, previous.result.turn + 1
        return worker

    async def discard(self, worker_id: str, owner: str = "") -> Worker:
        """Drop a finished worker's worktree and branch, whatever they hold."""
        worker = self.get(worker_id, owner)
        if not worker.done.is_set():
            raise AetherError(f"Worker '{worker_id}' is still {worker.result.status}.", "Cancel it first")
        tree = worker.worktree
        if tree is None:
            raise AetherError(f"Worker '{worker_id}' has no worktree to discard.")
        if self._turn_running(tree):
            raise AetherError(f"A follow-up of '{worker_id}' is still running in its worktree.", "Cancel it first")
        await anyio.to_thread.run_sync(worktree.remove, tree)
        for other in self._workers.values():
            if other.worktree == tree:
                other.worktree = None
                other.result.worktree = other.result.branch = None
        return worker

    def _turn_running(self, tree: worktree.Worktree, other_than: Worker | None = None) -> bool:
        """Whether a worker (other than `other_than`) is still at work in `tree`."""
        return any(w.worktree == tree and not w.done.is_set() and w is not other_than for w in self._workers.values())

    def _admit(self, task: str) -> CasteCatalog:
        """The castes of the trusted profile, when the colony can take one more worker with this task."""
        if self._group is None:
            raise AetherError("The colony is closed; no more workers can start.")
        if not task.strip():
            raise AetherError("The task is empty: say what the worker should do.")
        if len(task.encode()) > MAX_TASK_BYTES:
            raise AetherError(
                f"The task is {len(task.encode()):,} bytes; a task may be at most {MAX_TASK_BYTES:,}.",
                "Put the material in a file in the worker's directory and name the file in the task",
            )
        catalog = self.store.catalog(trusted=True)
        profile = catalog.profile
        waiting = sum(1 for w in self._workers.values() if w.result.status == "queued")
        if waiting >= profile.workers.max_queued_workers:
            raise AetherError(
                f"{waiting} workers are already queued, the most workers.max_queued_workers allows.",
                "Wait for some to finish, or cancel some",
            )
        return catalog

    async def _preflight(self, spec: WorkerSpec) -> Preflight | None:
        if not spec.settings.endpoint:
            return None
        token = spec.settings.auth_token.get_secret_value() if spec.settings.auth_token else None
        preflight: Preflight = await anyio.to_thread.run_sync(
            self._checker.preflight, spec.settings.endpoint, token, spec.model
        )
        return preflight

    async def _through_gateway(self, spec: WorkerSpec) -> Lease | None:
        """A proxied worker talks to the gateway with a key of its own; the real token stays here."""
        if not spec.settings.endpoint:
            return None
        lease = self._lease_for(spec)
        spec.gateway_url = await self._gateway_url()
        spec.gateway_key = self._the_gateway().lease(lease)
        return lease

    def _the_gateway(self) -> Gateway:
        if self._gateway is None:
            from .gateway import Gateway  # a server with no proxied worker never loads it

            self._gateway = Gateway()
        return self._gateway

    async def _gateway_url(self) -> str:
        assert self._group is not None
        return await self._the_gateway().start(self._group)

    def _release_key(self, key: str) -> None:
        if self._gateway is not None:
            self._gateway.release(key)

    def _warm_key_for(self, spec: WorkerSpec) -> str:
        """A warm worker's own gateway key; the worker that takes it brings its lease along."""
        return self._the_gateway().lease(self._lease_for(spec))

    def _lease_for(self, spec: WorkerSpec) -> Lease:
        """What the gateway holds a worker's requests to: its endpoint and token, its models, its budget."""
        from .gateway import Lease

        s = spec.settings
        assert s.endpoint is not None
        metadata = self.store.load()[0].model_metadata or {}
        return Lease(
            worker_id=spec.worker_id,
            caste=spec.caste,
            upstream=s.endpoint,
            token=s.auth_token.get_secret_value() if s.auth_token else None,
            models=(spec.model, *s.fallback_models) if spec.model else None,
            prices={name: _prices(meta) for name, meta in metadata.items()},
            max_tokens=s.max_tokens,
            max_budget_usd=s.max_budget_usd,
        )

    def _worktree_for(self, spec: WorkerSpec, base: str | None) -> worktree.Worktree:
        """A fresh worktree for the worker; its directory becomes the same place inside that worktree."""
        repo = worktree.repository_root(spec.cwd)  # the repository the worker was to work in
        tree = worktree.create(repo, self.store.cwd, spec.worker_id, base)
        spec.cwd = tree.path / spec.cwd.relative_to(repo) if spec.cwd.is_relative_to(repo) else tree.path
        return tree

    def _start(
        self,
        spec: WorkerSpec,
        catalog: CasteCatalog,
        preflight: Preflight | None,
        owner: str,
        tree: worktree.Worktree | None,
        *,
        lease: Lease | None,
    ) -> Worker:
        assert self._group is not None
        result = WorkerResult(
            worker_id=spec.worker_id,
            caste=spec.caste,
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
        self._warm_counts = _warm_counts(catalog)
        worker = Worker(result, spec, preflight, owner)
        worker.worktree = tree
        worker.lease = lease
        self._workers[spec.worker_id] = worker
        self._prune()
        if self._limit is None:
            self._limit = anyio.Semaphore(catalog.profile.workers.max_concurrent_workers)
        self._group.start_soon(self._run, worker)
        return worker

    def _spec(
        self,
        catalog: CasteCatalog,
        caste: str,
        task: str,
        *,
        cwd: str | None,
        model: str | None,
        timeout_s: float | None,
    ) -> WorkerSpec:
        return build_spec(
            catalog,
            caste,
            task,
            home=self.store.cwd,
            environ=self._environ,
            cwd=cwd,
            model=model,
            timeout_s=timeout_s,
        )

    async def _prestart_warm_workers(self) -> None:
        """Fill the warm pool for each caste the profile asks for, so even the first spawn is warm.

        It waits a moment first: reading the profile and starting CLIs would slow the session's first requests."""
        await anyio.sleep(PRESTART_DELAY_S)
        try:
            catalog = self.store.catalog(trusted=True)
            self._warm.idle_s = catalog.profile.workers.warm_idle_s
            self._warm_counts = _warm_counts(catalog)
            specs = [self._spec(catalog, c, "", cwd=None, model=None, timeout_s=None) for c in self._warm_counts]
            for spec in specs:
                if spec.settings.endpoint:
                    spec.gateway_url = await self._gateway_url()
        except AetherError as exc:  # a spawn will report the same problem when it happens
            log.warning("no warm workers: %s", exc)
            return
        assert self._group is not None
        for spec in specs:
            self._group.start_soon(self._warm.fill, self._group, spec, self._warm_counts[spec.caste])

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
                worker.notify()
                warm = self._warm.take(worker.spec)
                worker.result.warm = warm is not None
                if warm is not None and warm.gateway_key is not None and worker.lease is not None:
                    # The warm process holds a key of its own: it now carries this worker's lease.
                    self._release_key(worker.spec.gateway_key or "")
                    self._the_gateway().adopt(warm.gateway_key, worker.lease)
                    worker.spec.gateway_key = warm.gateway_key
                outcome = await run_worker(
                    worker.spec,
                    self._environ,
                    on_progress=lambda s: self._progress(worker, s),
                    on_started=_pid_setter(worker),
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
                self._refill(worker, taken=worker.result.warm)
        if outcome is None:  # cancelled before the worker answered
            with anyio.CancelScope(shield=True):
                await self._finish(worker, None)

    def _refill(self, worker: Worker, taken: bool) -> None:
        """Keep the caste's warm workers topped up: after a take, or when its default worker found none.

        A spawn with its own model, directory or answer schema, or a follow-up, is not the caste's usual worker:
        nothing is pre-started for it."""
        spec = worker.spec
        count = self._warm_counts.get(spec.caste, 0)
        usual = worker.result.model_source != "explicit" and spec.cwd == self.store.cwd
        usual = usual and spec.output_schema is None and spec.resume is None
        if count and (taken or usual) and self._group is not None:
            self._group.start_soon(self._warm.fill, self._group, worker.spec, count)

    def _progress(self, worker: Worker, summary: StreamSummary) -> None:
        worker.turns, worker.last_tool = summary.turns, summary.last_tool
        worker.notify()

    async def _finish(self, worker: Worker, outcome: RunOutcome | None, failure: str | None = None) -> None:
        result = worker.result
        secrets = worker_secrets(worker.spec.settings, self._environ)
        result.finished_at = _now()
        if worker.spec.gateway_key is not None:
            self._release_key(worker.spec.gateway_key)  # the key is refused from now on
        if outcome is not None:
            worker.answer = settle(result, worker.spec, outcome, worker.preflight, secrets, lease=worker.lease)
        elif failure is not None:
            result.status, result.error = "failed", redact(failure, secrets)
        else:
            result.status = "cancelled"
            result.error = "Cancelled before it finished; the worker and its process group were killed."
        worker.spec.task = ""  # the history keeps what ran and how it went, not what it was told
        if worker.worktree is not None:
            await anyio.to_thread.run_sync(self._report_worktree, worker)  # git, off the event loop
        self._log(result)
        worker.done.set()
        worker.notify()

    def _report_worktree(self, worker: Worker) -> None:
        """What the worker left in its worktree; a worktree it left untouched is removed with its branch."""
        tree, result = worker.worktree, worker.result
        assert tree is not None
        try:
            found = worktree.report(tree)
            result.commits, result.diffstat = found.commits, found.diffstat or None
            if not found.changed and not self._turn_running(tree, other_than=worker):
                worktree.remove(tree)
                result.worktree = result.branch = None
            else:
                worktree.unlock(tree)
        except AetherError as exc:  # the worker's result stands; the worktree stays for the user to look at
            result.error = sentences(result.error, f"Its worktree could not be read: {exc}") or None

    def _log(self, result: WorkerResult) -> None:
        """One JSON line per finished worker: what ran, on which model, and whether that was proven."""
        entry = result.model_dump(mode="json", include=LOG_FIELDS)
        try:
            append_entry(log_path(self.state_dir), self.store.cwd, entry)
        except (AetherError, OSError) as exc:  # the worker's own result stands; only its log line is lost
            log.warning("spawn log not written: %s", exc)

    def _prune(self) -> None:
        """Forget the oldest finished workers past MAX_HISTORY (they stay in the spawn log)."""
        finished = [key for key, w in self._workers.items() if w.done.is_set()]
        for key in finished[: max(0, len(finished) - MAX_HISTORY)]:
            del self._workers[key]

    # --- looking and stopping --------------------------------------------------

    def get(self, worker_id: str, owner: str = "") -> Worker:
        """A worker `owner` started; another owner's worker is as unknown as one that never was."""
        worker = self._workers.get(worker_id)
        if worker is None or worker.owner != owner:
            mine = [key for key, w in self._workers.items() if w.owner == owner]
            known = ", ".join(mine[-10:]) or "none yet"
            raise AetherError(f"No worker '{worker_id}' in this session. Its recent workers: {known}.")
        return worker

    def list(self, owner: str = "") -> list[WorkerLine]:
        """The workers `owner` started, newest first."""
        return [
            WorkerLine(
                worker_id=w.result.worker_id,
                caste=w.result.caste,
                model=w.result.model,
                status=w.result.status,
                routing_verified=w.result.routing_verified,
                duration_s=w.result.duration_s,
                worktree=w.result.worktree,
                turn=w.result.turn,
            )
            for w in reversed(self._workers.values())
            if w.owner == owner
        ]

    def cancel(self, worker_id: str, owner: str = "") -> Worker:
        worker = self.get(worker_id, owner)
        worker.scope.cancel()
        return worker

    def kill_all_now(self) -> None:
        """From a signal handler: SIGKILL the group of every worker whose process still lives, no waiting.

        That includes a worker that has answered and is still in its grace period to exit."""
        self._warm.kill_all_now()
        for worker in self._workers.values():
            if worker.pid is not None:
                kill_group_now(worker.pid)

    async def close(self) -> None:
        """Cancel every worker and wait (at most SHUTDOWN_S) until each is dead and logged."""
        for worker in self._workers.values():
            worker.scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_S):
            for worker in list(self._workers.values()):
                await worker.done.wait()
        self.kill_all_now()  # whatever did not end in time


# What signal.signal returns and takes: a function, SIG_DFL or SIG_IGN (or None, for a handler not set from Python).
SignalHandler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


def _on_sigterm(kill_all: Callable[[], None]) -> SignalHandler:
    """SIGTERM ends the process before any cleanup runs, and the workers live in
    process groups of their own: kill those groups first, then die as asked."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: FrameType | None) -> None:
        kill_all()
        signal.signal(signal.SIGTERM, previous)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, handler)
    return previous


def _restore_sigterm(previous: SignalHandler) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def _warm_counts(catalog: CasteCatalog) -> dict[str, int]:
    """Warm workers wanted per caste, keyed by the caste's own name."""
    counts = {}
    for name, count in catalog.profile.workers.warm_workers.items():
        try:
            if count:
                counts[catalog.find(name)] = count
        except UnknownCasteError:  # a typo there must not stop spawns: the caste just gets no warm workers
            log.warning("workers.warm_workers names no caste: %s", name)
    return counts


def _budget(max_budget_usd: float | None, max_tokens: int | None) -> dict[str, Any]:
    """A spawn's own budget, over the caste's; each bounded before anything starts."""
    update: dict[str, Any] = {}
    if max_budget_usd is not None:
        if not 0 < max_budget_usd <= MAX_BUDGET_USD:  # NaN fails this too
            raise AetherError(
                f"max_budget_usd must be more than 0 and at most {MAX_BUDGET_USD:g}, not {max_budget_usd}."
            )
        update["max_budget_usd"] = max_budget_usd
    if max_tokens is not None:
        if not 0 < max_tokens <= MAX_TOKENS:
            raise AetherError(f"max_tokens must be more than 0 and at most {MAX_TOKENS:,}, not {max_tokens}.")
        update["max_tokens"] = max_tokens
    return update


def _prices(meta: ModelMetadata) -> Prices:
    from .gateway import Prices

    return Prices(
        input=meta.input_cost_per_mtok,
        output=meta.output_cost_per_mtok,
        cache_read=meta.cache_read_cost_per_mtok,
        cache_write=meta.cache_write_cost_per_mtok,
    )


def _pid_setter(worker: Worker) -> Callable[[int], None]:
    def remember(pid: int) -> None:
        worker.pid = pid

    return remember


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
