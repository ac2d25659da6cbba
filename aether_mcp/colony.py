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
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel, Field

from . import proof
from .castes import settings_for
from .errors import AetherError
from .profiles import Profile, Source, check_model_name, resolve
from .proxy import ProxyChecker
from .spawn_log import append_entry
from .store import ProfileStore
from .warm import WarmPool
from .workers import RunOutcome, StreamSummary, WorkerSpec, find_cli, finish_process, kill_group_now, run_worker

log = logging.getLogger("aether_mcp")

Status = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled"]
OUTPUT_CAP = 20_000
PRESTART_DELAY_S = 1.0
REDACTED = "[redacted]"
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
    "cost_usd",
    "started_at",
    "finished_at",
    "cwd",
    "transcript_path",
}


class WorkerResult(BaseModel):
    """One worker: what it was asked, what ran it, and what its stream proves."""

    worker_id: str = Field(description="Pass to get_worker or cancel_worker.")
    caste: str
    model: str | None = Field(description="The model the worker was started on (null: the CLI's own default).")
    model_source: Source = Field(description="Why that model: override, profile, slot, task, default or explicit.")
    status: Status
    output: str | None = Field(default=None, description="The worker's final answer (capped; see transcript_path).")
    models_reported: list[str] = Field(
        default_factory=list, description="Every model the worker's own stream named (init, answers, modelUsage)."
    )
    routing_verified: bool = Field(default=False, description="True only when the evidence shows the assigned model.")
    routing_evidence: list[str] = Field(default_factory=list, description="What was checked and what it showed.")
    duration_s: float | None = None
    num_turns: int | None = None
    usage: dict[str, int] | None = None
    cost_usd: float | None = None
    session_id: str | None = None
    transcript_path: str | None = None
    cli: str | None = Field(
        default=None, description="The Claude Code CLI that ran the worker, and which rule chose it."
    )
    warm: bool = Field(default=False, description="True when a pre-started (warm) Claude Code process took the task.")
    cwd: str
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = Field(default=None, description="What went wrong and how to fix it; null on success.")


class WorkerLine(BaseModel):
    worker_id: str
    caste: str
    model: str | None
    status: Status
    routing_verified: bool
    duration_s: float | None


class Worker:
    """A worker's live state inside the colony."""

    def __init__(self, result: WorkerResult, spec: WorkerSpec, preflight: tuple[bool, str] | None) -> None:
        self.result = result
        self.spec = spec
        self.preflight = preflight
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.changed = anyio.Event()
        self.pid: int | None = None
        self.turns = 0
        self.last_tool: str | None = None

    def notify(self) -> None:
        """Wake whoever waits for news of this worker (progress, start, end)."""
        previous, self.changed = self.changed, anyio.Event()
        previous.set()


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
        self._previous_sigterm: Any = None
        self._warm = WarmPool(self._environ)
        self._warm_counts: dict[str, int] = {}
        self.state_dir = store.cwd / ".aether"

    async def __aenter__(self) -> Colony:
        self._group = await anyio.create_task_group().__aenter__()
        self._previous_sigterm = _on_sigterm(self.kill_all_now)
        self._group.start_soon(self._prestart_warm_workers)  # in the background: serving starts at once
        return self

    async def __aexit__(self, *exc: object) -> None:
        _restore_sigterm(self._previous_sigterm)
        await self.close()
        await self._warm.close()
        assert self._group is not None
        self._group.cancel_scope.cancel()  # idle reapers and refills; workers are already done
        await self._group.__aexit__(None, None, None)
        self._group = None

    # --- starting ------------------------------------------------------------

    async def spawn(
        self,
        caste: str,
        task: str,
        cwd: str | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> Worker:
        """Check everything a worker needs, then start it (or queue it). Refusals raise before anything runs."""
        if self._group is None:
            raise AetherError("The colony is closed; no more workers can start.")
        if not task.strip():
            raise AetherError("The task is empty: say what the worker should do.")
        if timeout_s is not None and timeout_s <= 0:
            raise AetherError(f"timeout_s must be positive, not {timeout_s}.")
        profile, _ = self.store.load()
        spec, source = self._spec(profile, caste, task, cwd=cwd, model=model, timeout_s=timeout_s)
        preflight = None
        if spec.settings.endpoint:
            token = spec.settings.auth_token.get_secret_value() if spec.settings.auth_token else None
            preflight = await anyio.to_thread.run_sync(
                self._checker.preflight, spec.settings.endpoint, token, spec.model
            )
        result = WorkerResult(
            worker_id=spec.worker_id,
            caste=spec.caste,
            model=spec.model,
            model_source=source,
            status="queued",
            transcript_path=str(spec.transcript_path),
            cli=f"{spec.cli.path} ({spec.cli.rule})",
            cwd=str(spec.cwd),
        )
        worker = Worker(result, spec, preflight)
        self._workers[spec.worker_id] = worker
        if self._limit is None:
            self._limit = anyio.Semaphore(profile.workers.max_concurrent_workers)
        self._warm_counts = _warm_counts(profile)
        self._group.start_soon(self._run, worker)
        return worker

    def _spec(
        self, profile: Profile, caste: str, task: str, *, cwd: str | None, model: str | None, timeout_s: float | None
    ) -> tuple[WorkerSpec, Source]:
        """The worker a spawn asks for: its model (and why), settings, CLI and directory."""
        entry = resolve(profile, caste, task)
        chosen: str | None = entry.model
        source: Source = entry.source
        if model is not None:
            chosen, source = check_model_name(model), "explicit"
        settings = settings_for(profile, entry.caste)
        if timeout_s is not None:
            settings = settings.model_copy(update={"timeout_s": timeout_s})
        worker_id = f"{normalize_id(entry.caste)}-{uuid.uuid4().hex[:8]}"
        spec = WorkerSpec(
            worker_id=worker_id,
            caste=entry.caste,
            task=task,
            model=chosen,
            cwd=self._workdir(cwd),
            settings=settings,
            cli=find_cli(profile, self._environ),
            transcript_path=self.state_dir / "workers" / f"{worker_id}.jsonl",
            max_retries=profile.workers.max_retries,
            api_timeout_ms=profile.workers.api_timeout_ms,
            env_passthrough=profile.workers.env_passthrough,
        )
        return spec, source

    async def _prestart_warm_workers(self) -> None:
        """Fill the warm pool for each caste the profile asks for, so even the first spawn is warm.

        It waits a moment first: reading the profile and starting CLIs would slow the session's first requests."""
        await anyio.sleep(PRESTART_DELAY_S)
        try:
            profile, _ = self.store.load()
            self._warm.idle_s = profile.workers.warm_idle_s
            self._warm_counts = _warm_counts(profile)
            specs = [self._spec(profile, c, "", cwd=None, model=None, timeout_s=None)[0] for c in self._warm_counts]
        except AetherError as exc:  # a spawn will report the same problem when it happens
            log.warning("no warm workers: %s", exc)
            return
        assert self._group is not None
        for spec in specs:
            self._group.start_soon(self._warm.fill, self._group, spec, self._warm_counts[spec.caste])

    def _workdir(self, cwd: str | None) -> Path:
        if cwd is None:
            return self.store.cwd
        path = Path(cwd).expanduser()
        if not path.is_absolute():
            raise AetherError(f"cwd must be an absolute path, not '{cwd}'.")
        if not path.exists():
            raise AetherError(f"cwd '{cwd}' does not exist.")
        if not path.is_dir():
            raise AetherError(f"cwd '{cwd}' is not a directory.")
        return path.resolve()

    async def _run(self, worker: Worker) -> None:
        assert self._limit is not None
        outcome: RunOutcome | None = None
        with worker.scope:
            async with self._limit:
                worker.result.status = "running"
                worker.result.started_at = _now()
                worker.notify()
                warm = self._warm.take(worker.spec)
                worker.result.warm = warm is not None
                outcome = await run_worker(
                    worker.spec,
                    self._environ,
                    on_progress=lambda s: self._progress(worker, s),
                    on_started=_pid_setter(worker),
                    warm_process=warm,
                )
                self._finish(worker, outcome)  # the result is out as soon as the stream gives it
                with anyio.CancelScope(shield=True):
                    await finish_process(outcome.process)
                worker.pid = None  # its group is gone: nothing left for kill_all_now to signal
                # Refill only now: a CLI starting beside a running worker, or before its answer is
                # sent, takes the CPU and the event loop they need.
                self._refill(worker, taken=worker.result.warm)
        if outcome is None:  # cancelled before the worker answered
            self._finish(worker, None)

    def _refill(self, worker: Worker, taken: bool) -> None:
        """Keep the caste's warm workers topped up: after a take, or when its default worker found none.

        A spawn with its own model or directory is not the caste's usual worker: nothing is pre-started for it."""
        count = self._warm_counts.get(worker.spec.caste, 0)
        usual = worker.result.model_source != "explicit" and worker.spec.cwd == self.store.cwd
        if count and (taken or usual) and self._group is not None:
            self._group.start_soon(self._warm.fill, self._group, worker.spec, count)

    def _progress(self, worker: Worker, summary: StreamSummary) -> None:
        worker.turns, worker.last_tool = summary.turns, summary.last_tool
        worker.notify()

    def _finish(self, worker: Worker, outcome: RunOutcome | None) -> None:
        result = worker.result
        secrets = self._secrets(worker)
        result.finished_at = _now()
        if outcome is None:
            result.status = "cancelled"
            result.error = "Cancelled before it finished; the worker and its process group were killed."
        else:
            self._judge(worker, outcome, secrets)
        _redact_file(Path(result.transcript_path or ""), secrets)
        self._log(result)
        worker.done.set()
        worker.notify()

    def _judge(self, worker: Worker, outcome: RunOutcome, secrets: list[str]) -> None:
        result, summary = worker.result, outcome.summary
        verdict = proof.judge(result.model, summary, worker.preflight)
        result.models_reported = summary.models_reported()
        result.routing_verified = verdict.verified
        result.routing_evidence = verdict.evidence
        result.duration_s = round(outcome.duration_s, 3)
        result.num_turns = summary.num_turns if summary.num_turns is not None else summary.turns
        result.usage = summary.usage
        result.cost_usd = summary.cost_usd
        result.session_id = summary.session_id
        result.output = _cap(redact(summary.result_text, secrets), result.transcript_path)
        failure = _failure(worker, outcome)
        if outcome.timed_out:
            result.status = "timed_out"
        elif failure:
            result.status = "failed"
        else:
            result.status = "succeeded"
        problems = [
            p for p in (failure, None if verdict.verified else f"Routing not verified: {verdict.problem}.") if p
        ]
        result.error = redact(" ".join(problems), secrets) or None

    def _secrets(self, worker: Worker) -> list[str]:
        token = worker.spec.settings.auth_token
        values = [token.get_secret_value()] if token else []
        values += [self._environ[k] for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN") if self._environ.get(k)]
        return [v for v in values if len(v) >= 4]

    def _log(self, result: WorkerResult) -> None:
        """One JSON line per finished worker: what ran, on which model, and whether that was proven."""
        entry = result.model_dump(mode="json", include=LOG_FIELDS)
        append_entry(self.state_dir / "spawn-log.jsonl", entry)

    # --- looking and stopping --------------------------------------------------

    def get(self, worker_id: str) -> Worker:
        worker = self._workers.get(worker_id)
        if worker is None:
            known = ", ".join(list(self._workers)[-10:]) or "none yet"
            raise AetherError(f"No worker '{worker_id}' in this server. Recent workers: {known}.")
        return worker

    def list(self) -> list[WorkerLine]:
        """This colony's workers, newest first."""
        return [
            WorkerLine(
                worker_id=w.result.worker_id,
                caste=w.result.caste,
                model=w.result.model,
                status=w.result.status,
                routing_verified=w.result.routing_verified,
                duration_s=w.result.duration_s,
            )
            for w in reversed(self._workers.values())
        ]

    def cancel(self, worker_id: str) -> Worker:
        worker = self.get(worker_id)
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
        """Cancel every worker and wait until each is dead and logged."""
        for worker in self._workers.values():
            worker.scope.cancel()
        with anyio.CancelScope(shield=True):
            for worker in list(self._workers.values()):
                await worker.done.wait()


def _on_sigterm(kill_all: Callable[[], None]) -> Any:
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


def _restore_sigterm(previous: Any) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def _warm_counts(profile: Profile) -> dict[str, int]:
    """Warm workers wanted per caste, keyed by the caste's name as the profile spells it."""
    counts = {}
    for name, count in profile.workers.warm_workers.items():
        if count:
            counts[profile.find_caste(name)] = count
    return counts


def normalize_id(caste: str) -> str:
    return caste.lower().replace("_", "-")


def _pid_setter(worker: Worker) -> Callable[[int], None]:
    def remember(pid: int) -> None:
        worker.pid = pid

    return remember


def _failure(worker: Worker, outcome: RunOutcome) -> str | None:
    """What went wrong, in words that say what to do; None when the worker did its job."""
    summary, settings = outcome.summary, worker.spec.settings
    if outcome.timed_out:
        return (
            f"The worker ran past its timeout of {settings.timeout_s:g} s and was killed with its process group. "
            f"Give it longer with timeout_s (or workers.castes.{worker.result.caste}.timeout_s in the profile)."
        )
    if summary.is_error or (summary.result_seen and summary.subtype not in (None, "success")):
        status = summary.error_status
        detail = (summary.result_text or summary.subtype or "error").strip()[:500]
        if status in (401, 403):
            return f"The backend rejected the worker's credentials (HTTP {status}): {detail}. Check the token."
        if status == 400 and "model" in detail.lower():
            return f"The backend refused the model '{worker.result.model}' (HTTP 400): {detail}."
        if status is not None and status >= 500:
            return f"The backend failed (HTTP {status}): {detail}. It may be overloaded; try again later."
        kind = f" ({summary.subtype})" if summary.subtype not in (None, "success") else ""
        return f"The worker reported an error{kind}: {detail}"
    if not summary.result_seen:
        tail = " | ".join(outcome.stderr_tail.strip().splitlines()[-3:]) or "no message"
        if outcome.exit_code:
            return f"The Claude Code CLI exited with status {outcome.exit_code}: {tail}"
        return f"The worker's stream ended without a result line ({tail}); see the transcript."
    return None


def redact(text: str | None, secrets: list[str]) -> str | None:
    if text is None:
        return None
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def _redact_file(path: Path, secrets: list[str]) -> None:
    """Rewrite a transcript without any secret that a tool or the model printed into it."""
    if not secrets or not path.is_file():
        return
    data = path.read_text(encoding="utf-8", errors="replace")
    cleaned = redact(data, secrets)
    if cleaned != data and cleaned is not None:
        path.write_text(cleaned, encoding="utf-8")


def _cap(text: str | None, transcript: str | None) -> str | None:
    if text is None or len(text) <= OUTPUT_CAP:
        return text
    return text[:OUTPUT_CAP] + f"\n[... {len(text) - OUTPUT_CAP} more characters in {transcript}]"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
