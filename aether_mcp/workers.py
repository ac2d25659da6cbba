"""One worker: a headless Claude Code process on an explicit model and environment.

The worker gets an argument list (never a shell string), its task on stdin
(a command-line argument is capped at 128 KiB), an environment built from an
allowlist rather than inherited, and a process group of its own so that it is
killed with everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio

from .castes import WorkerSettings
from .errors import AetherError
from .profiles import Profile

CLI_ENV_VAR = "AETHER_CLAUDE_CLI"
# Only these reach a worker from the server's own environment (plus LC_* and
# the profile's workers.env_passthrough): a worker must not pick up a stray
# ANTHROPIC_API_KEY and quietly go around the proxy.
ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "TERM", "TMPDIR", "USER", "SHELL")
MAX_LINE = 64 * 1024 * 1024
# The model name Claude Code gives the assistant messages it writes itself (API errors).
SYNTHETIC = "<synthetic>"
STDERR_TAIL = 4096

CliRule = Literal["AETHER_CLAUDE_CLI", "profile workers.claude_cli", "claude on PATH", "claude-agent-sdk bundle"]


class CliNotFoundError(AetherError):
    """No Claude Code CLI to start a worker with."""


@dataclass(frozen=True)
class ClaudeCli:
    path: str
    rule: CliRule

    def version(self) -> str | None:
        try:
            out = subprocess.run([self.path, "--version"], capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return None
        return out.stdout.strip() or None


def find_cli(profile: Profile, environ: Mapping[str, str]) -> ClaudeCli:
    """$AETHER_CLAUDE_CLI, the profile's workers.claude_cli, `claude` on PATH, then the claude-agent-sdk bundle."""
    for value, rule in (
        (environ.get(CLI_ENV_VAR), CLI_ENV_VAR),
        (profile.workers.claude_cli, "profile workers.claude_cli"),
    ):
        if value:
            found = shutil.which(value)
            if found is None:
                raise CliNotFoundError(f"The Claude Code CLI named by {rule} ({value}) is not an executable file.")
            return ClaudeCli(found, rule)  # type: ignore[arg-type]
    on_path = shutil.which("claude", path=environ.get("PATH"))
    if on_path:
        return ClaudeCli(on_path, "claude on PATH")
    bundled = _bundled_cli()
    if bundled:
        return ClaudeCli(bundled, "claude-agent-sdk bundle")
    raise CliNotFoundError(
        "No Claude Code CLI found. Install one (`npm install -g @anthropic-ai/claude-code`, or "
        "`pip install 'aether-mcp[cli]'` for the CLI bundled with claude-agent-sdk), or set "
        f"{CLI_ENV_VAR} to its path."
    )


def _bundled_cli() -> str | None:
    # Located without importing the SDK: only its files are needed.
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "_bundled" / "claude"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@dataclass
class WorkerSpec:
    """Everything needed to start one worker."""

    worker_id: str
    caste: str
    task: str
    model: str | None
    cwd: Path
    settings: WorkerSettings
    cli: ClaudeCli
    transcript_path: Path
    max_retries: int = 2
    api_timeout_ms: int = 120_000
    env_passthrough: list[str] = field(default_factory=list)


def build_command(spec: WorkerSpec) -> list[str]:
    """The worker's argument list. No secret goes here: /proc/<pid>/cmdline is world-readable."""
    s = spec.settings
    command = [spec.cli.path, "-p", "--output-format", "stream-json", "--verbose"]
    if spec.model:
        command += ["--model", spec.model]
    command += ["--append-system-prompt", s.role, "--permission-mode", s.permission_mode]
    command += ["--max-turns", str(s.max_turns)]
    if s.max_budget_usd is not None:
        command += ["--max-budget-usd", f"{s.max_budget_usd:g}"]
    if s.allowed_tools:
        command += ["--allowedTools", ",".join(s.allowed_tools)]
    if s.disallowed_tools:
        command += ["--disallowedTools", ",".join(s.disallowed_tools)]
    # Only the caste's own MCP servers: a worker never loads aether-mcp from
    # the project's .mcp.json, so it cannot start a colony of its own.
    command += ["--strict-mcp-config", "--mcp-config", json.dumps({"mcpServers": s.mcp_servers})]
    return command


def build_env(spec: WorkerSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """The worker's whole environment, built from an allowlist."""
    keep = set(ENV_ALLOWLIST) | set(spec.env_passthrough)
    env = {k: v for k, v in environ.items() if k in keep or k.startswith("LC_")}
    for secret in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        if secret not in spec.env_passthrough:
            env.pop(secret, None)
    env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    endpoint = spec.settings.endpoint
    if endpoint:
        env["ANTHROPIC_BASE_URL"] = endpoint
        env.pop("ANTHROPIC_API_KEY", None)
        if spec.settings.auth_token is not None:
            env["ANTHROPIC_AUTH_TOKEN"] = spec.settings.auth_token.get_secret_value()
        env["CLAUDE_CODE_MAX_RETRIES"] = str(spec.max_retries)
        env["API_TIMEOUT_MS"] = str(spec.api_timeout_ms)
    if spec.model:
        env["ANTHROPIC_MODEL"] = spec.model
        if endpoint:
            # Nothing inside the worker may fall back to a model the proxy does not route.
            for variable in (
                "ANTHROPIC_DEFAULT_OPUS_MODEL",
                "ANTHROPIC_DEFAULT_SONNET_MODEL",
                "ANTHROPIC_DEFAULT_HAIKU_MODEL",
                "ANTHROPIC_SMALL_FAST_MODEL",
                "CLAUDE_CODE_SUBAGENT_MODEL",
            ):
                env[variable] = spec.model
    return env


# --- the stream --------------------------------------------------------------


@dataclass
class StreamSummary:
    """What a worker's stream-json output said, line by line."""

    init_model: str | None = None
    answered_models: list[str] = field(default_factory=list)
    usage_models: list[str] = field(default_factory=list)
    turns: int = 0
    last_tool: str | None = None
    result_seen: bool = False
    result_text: str | None = None
    is_error: bool = False
    error_status: int | None = None
    subtype: str | None = None
    num_turns: int | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    session_id: str | None = None
    permission_denials: list[str] = field(default_factory=list)
    malformed_lines: int = 0
    synthetic_messages: int = 0

    def feed(self, line: str) -> bool:
        """Take one line; True when it was a new assistant turn (worth a progress note)."""
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            self.malformed_lines += 1
            return False
        if not isinstance(event, dict):
            self.malformed_lines += 1
            return False
        kind = event.get("type")
        self.session_id = event.get("session_id") or self.session_id
        if kind == "system" and event.get("subtype") == "init":
            self.init_model = _text(event.get("model"))
        elif kind == "assistant" and isinstance(event.get("message"), dict):
            return self._assistant(event["message"], nested=event.get("parent_tool_use_id") is not None)
        elif kind == "result":
            self._result(event)
        return False

    def _assistant(self, message: dict[str, Any], nested: bool) -> bool:
        model = _text(message.get("model"))
        if model == SYNTHETIC:  # the CLI's own error text, not an answer from any backend
            self.synthetic_messages += 1
            return False
        if model and model not in self.answered_models:
            self.answered_models.append(model)
        for block in message.get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                self.last_tool = _text(block.get("name"))
        if not nested:
            self.turns += 1
        return not nested

    def _result(self, event: dict[str, Any]) -> None:
        self.result_seen = True
        self.subtype = _text(event.get("subtype"))
        self.is_error = bool(event.get("is_error"))
        status = event.get("api_error_status")
        self.error_status = status if isinstance(status, int) else None
        self.result_text = _text(event.get("result"))
        turns = event.get("num_turns")
        self.num_turns = turns if isinstance(turns, int) else None
        usage = event.get("usage")
        self.usage = {k: v for k, v in usage.items() if isinstance(v, int)} if isinstance(usage, dict) else None
        cost = event.get("total_cost_usd")
        self.cost_usd = float(cost) if isinstance(cost, int | float) else None
        model_usage = event.get("modelUsage")
        if isinstance(model_usage, dict):
            self.usage_models = [str(m) for m in model_usage]
        denials = event.get("permission_denials")
        if isinstance(denials, list):
            self.permission_denials = [str(d.get("tool_name")) for d in denials if isinstance(d, dict)]

    def models_reported(self) -> list[str]:
        """Every model the stream named, in first-seen order."""
        seen: list[str] = []
        for model in [self.init_model, *self.answered_models, *self.usage_models]:
            if model and model not in seen:
                seen.append(model)
        return seen


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# --- running -----------------------------------------------------------------


@dataclass
class RunOutcome:
    """How a worker's run went. `process` may still be exiting: end it with `finish_process`."""

    exit_code: int | None
    timed_out: bool
    summary: StreamSummary
    stderr_tail: str
    duration_s: float
    process: asyncio.subprocess.Process


ProgressFn = Callable[[StreamSummary], None]


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to kill the worker if the server dies without cleaning up."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return hook


_PRE_EXEC = _die_with_parent()


async def start_process(spec: WorkerSpec, environ: Mapping[str, str], warm: bool = False) -> asyncio.subprocess.Process:
    """Start the CLI for `spec`. A warm process waits for its task as a stream-json message on stdin."""
    command = build_command(spec) + (["--input-format", "stream-json"] if warm else [])
    return await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=spec.cwd,
        env=build_env(spec, environ),
        start_new_session=True,
        preexec_fn=_PRE_EXEC,
        limit=MAX_LINE,
    )


async def run_worker(
    spec: WorkerSpec,
    environ: Mapping[str, str],
    on_progress: ProgressFn | None = None,
    on_started: Callable[[int], None] | None = None,
    warm_process: asyncio.subprocess.Process | None = None,
) -> RunOutcome:
    """Feed the worker its task and follow its stream until the result line.

    Returns as soon as the result is known; the caller then ends the process
    with `finish_process`. On timeout, cancel or error the whole process
    group is killed here."""
    started = time.monotonic()
    spec.transcript_path.parent.mkdir(parents=True, exist_ok=True)
    process = warm_process or await start_process(spec, environ)
    if on_started:
        on_started(process.pid)
    summary = StreamSummary()
    stderr = bytearray()
    try:
        with anyio.move_on_after(spec.settings.timeout_s) as deadline:
            async with anyio.create_task_group() as group:
                group.start_soon(_feed_task, process, spec.task, warm_process is not None)
                group.start_soon(_drain, process, stderr)
                await _follow(process, spec.transcript_path, summary, on_progress)
                group.cancel_scope.cancel()
        if deadline.cancelled_caught:
            with anyio.CancelScope(shield=True):
                await kill_group(process)
        elif not summary.result_seen:  # the stream ended early: let the CLI exit and say why
            await finish_process(process)
    except BaseException:
        # Shielded: a cancelled request must still end the worker it started.
        with anyio.CancelScope(shield=True):
            await kill_group(process)
        raise
    return RunOutcome(
        exit_code=process.returncode,
        timed_out=deadline.cancelled_caught,
        summary=summary,
        stderr_tail=stderr[-STDERR_TAIL:].decode("utf-8", "replace"),
        duration_s=time.monotonic() - started,
        process=process,
    )


async def finish_process(process: asyncio.subprocess.Process, grace_s: float = 2.0) -> None:
    """Give a worker that has answered a moment to exit by itself (it saves its session), then end its group."""
    with anyio.move_on_after(grace_s):
        await process.wait()
    await kill_group(process)


async def _feed_task(process: asyncio.subprocess.Process, task: str, as_message: bool) -> None:
    assert process.stdin is not None
    if as_message:  # a warm worker reads stream-json
        task = json.dumps({"type": "user", "message": {"role": "user", "content": task}}) + "\n"
    try:
        process.stdin.write(task.encode())
        await process.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the worker died early; its exit status says why
    finally:
        process.stdin.close()


async def _follow(
    process: asyncio.subprocess.Process, transcript: Path, summary: StreamSummary, on_progress: ProgressFn | None
) -> None:
    assert process.stdout is not None
    with transcript.open("wb") as out:
        while True:
            try:
                line = await process.stdout.readline()
            except ValueError:  # a line past MAX_LINE: keep what fits, count it as malformed
                summary.malformed_lines += 1
                continue
            if not line:
                return
            out.write(line)
            out.flush()
            if summary.feed(line.decode("utf-8", "replace")) and on_progress:
                on_progress(summary)
            if summary.result_seen:
                return


async def _drain(process: asyncio.subprocess.Process, into: bytearray) -> None:
    assert process.stderr is not None
    while chunk := await process.stderr.read(65536):
        into.extend(chunk)
        del into[:-STDERR_TAIL]


async def kill_group(process: asyncio.subprocess.Process, grace_s: float = 2.0) -> None:
    """End the worker and everything it started: SIGTERM to its group, then SIGKILL."""
    pgid = process.pid  # start_new_session made it the group leader
    if process.returncode is None:
        _signal_group(pgid, signal.SIGTERM)
        with anyio.move_on_after(grace_s):
            await process.wait()
    # Its children may outlive the leader; the group still names them.
    _signal_group(pgid, signal.SIGKILL)
    if process.returncode is None:
        await process.wait()


def kill_group_now(pgid: int) -> None:
    """For signal handlers: SIGKILL a worker's group at once."""
    _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pgid, sig)
