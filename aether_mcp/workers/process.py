"""Running one worker: a headless Claude Code process, its task on stdin, its stream followed to the result.

The worker gets an argument list (never a shell string), its task on stdin
(a command-line argument is capped at 128 KiB), and a process group of its
own so that it is killed with everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from .spec import WorkerSpec, build_command, build_env
from .stream import StreamSummary, user_message

MAX_LINE = 64 * 1024 * 1024
STDERR_TAIL = 4096


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
        task = user_message(task)
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
