"""Running one worker: a headless Claude Code process, its task on stdin, its stream followed to the result.

The worker gets an argument list (never a shell string), its task on stdin
(a command-line argument is capped at 128 KiB), and a process group of its
own so that it is killed with everything it started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import BinaryIO

import anyio

from ..private_files import open_private
from .groups import MARK_VARIABLE, die_with_parent, kill_marked, signal_group
from .secrets import redact_bytes, worker_secrets
from .spec import WorkerSpec, build_command, build_env, write_worker_files
from .stream import StreamSummary, user_message

MAX_LINE = 64 * 1024 * 1024
STDERR_TAIL = 4096


@dataclass
class RunOutcome:
    """How a worker's run went. A local `process` may still be exiting: end it with `finish_process`. A remote
    run (no process here) has ended on its node."""

    exit_code: int | None
    timed_out: bool
    summary: StreamSummary
    stderr_tail: str
    duration_s: float
    process: asyncio.subprocess.Process | None


ProgressFn = Callable[[StreamSummary], None]


_PRE_EXEC = die_with_parent()
_marks: dict[int, str] = {}  # pid -> the mark of its worker's processes


async def start_process(
    spec: WorkerSpec, environ: Mapping[str, str], key: str | None, warm: bool = False
) -> asyncio.subprocess.Process:
    """Start the CLI for `spec`, with `key` as its credential at the gateway (a proxied worker's). A warm
    process waits for its task as a stream-json message on stdin."""
    command = build_command(spec) + (["--input-format", "stream-json"] if warm else [])
    write_worker_files(spec)
    mark = uuid.uuid4().hex
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=spec.cwd,
        env=build_env(spec, environ, key) | {MARK_VARIABLE: mark},
        start_new_session=True,
        preexec_fn=_PRE_EXEC,
        limit=MAX_LINE,
    )
    _marks[process.pid] = mark
    return process


async def run_worker(
    spec: WorkerSpec,
    environ: Mapping[str, str],
    *,
    key: str | None,
    on_progress: ProgressFn | None = None,
    on_started: Callable[[int], None] | None = None,
    warm_process: asyncio.subprocess.Process | None = None,
) -> RunOutcome:
    """Feed the worker its task and follow its stream until the result line.

    Returns as soon as the result is known; the caller then ends the process
    with `finish_process`. On timeout, cancel or error the whole process
    group is killed here."""
    started = time.monotonic()
    summary = StreamSummary()
    stderr = bytearray()
    process = warm_process
    try:
        with os.fdopen(open_private(spec.transcript_path, spec.server_dir), "wb") as transcript:
            process = process or await start_process(spec, environ, key)
            if on_started:
                on_started(process.pid)
            with anyio.move_on_after(spec.settings.timeout_s) as deadline:
                async with anyio.create_task_group() as group:
                    group.start_soon(_feed_task, process, spec.task, warm_process is not None)
                    group.start_soon(_drain, process, stderr)
                    secrets = worker_secrets(spec.settings, environ)
                    await follow(_stdout_lines(process), transcript, secrets, summary, on_progress)
                    group.cancel_scope.cancel()
        if deadline.cancelled_caught:
            with anyio.CancelScope(shield=True):
                await kill_group(process)
        elif not summary.result_seen:  # the stream ended early: let the CLI exit and say why
            await finish_process(process)
    except BaseException:
        # Shielded: a cancelled request must still end the worker it started (or the warm one it took).
        if process is not None:
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


async def follow(
    lines: AsyncIterator[bytes | None],
    transcript: BinaryIO,
    secrets: list[str],
    summary: StreamSummary,
    on_progress: ProgressFn | None,
) -> None:
    """Follow a worker's stream (a None for each line too long to keep) to its result line, writing each line
    to its transcript, redacted."""
    async for line in lines:
        if line is None:  # counted as malformed
            summary.malformed_lines += 1
            continue
        transcript.write(redact_bytes(line, secrets))  # redacted as it is written: a killed server leaves no secret
        transcript.flush()
        if summary.feed(line.decode("utf-8", "replace")) and on_progress:
            on_progress(summary)
        if summary.result_seen:
            return


async def _stdout_lines(process: asyncio.subprocess.Process) -> AsyncIterator[bytes | None]:
    assert process.stdout is not None
    while True:
        try:
            line = await process.stdout.readline()
        except ValueError:  # a line past MAX_LINE: asyncio drops it
            yield None
            continue
        if not line:
            return
        yield line


async def _drain(process: asyncio.subprocess.Process, into: bytearray) -> None:
    assert process.stderr is not None
    while chunk := await process.stderr.read(65536):
        into.extend(chunk)
        del into[:-STDERR_TAIL]


async def kill_group(process: asyncio.subprocess.Process, grace_s: float = 2.0) -> None:
    """End the worker and everything it started: SIGTERM to its group, then SIGKILL."""
    pgid = process.pid  # start_new_session made it the group leader
    if process.returncode is None:
        signal_group(pgid, signal.SIGTERM)
        with anyio.move_on_after(grace_s):
            await process.wait()
    # Its children may outlive the leader; the group still names them, and the mark those that left it.
    kill_group_now(pgid)
    if process.returncode is None:
        await process.wait()


def kill_group_now(pgid: int) -> None:
    """SIGKILL a worker's group and every process with its mark, at once (also from a signal handler)."""
    signal_group(pgid, signal.SIGKILL)
    mark = _marks.pop(pgid, None)
    if mark is not None:
        kill_marked(mark)


# What signal.signal returns and takes: a function, SIG_DFL or SIG_IGN (or None, for a handler not set from Python).
SignalHandler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


@contextmanager
def killed_on_sigterm(kill_all: Callable[[], None]) -> Iterator[None]:
    """While inside, SIGTERM first runs `kill_all`, then ends the process as asked.

    SIGTERM ends the process before any cleanup runs, and workers live in process groups of their own:
    their groups must be killed from the handler itself. Only the main thread can set a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        kill_all()
        signal.signal(signal.SIGTERM, previous)
        os.kill(os.getpid(), signal.SIGTERM)

    previous: SignalHandler = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
