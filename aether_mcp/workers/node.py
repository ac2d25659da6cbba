"""A remote worker's side, on its Ray node: a checkout of the base commit, the Claude Code CLI in a process group
of its own, its stream line by line, its commits sent back as a bundle, and nothing left behind.

Standard library only (with `groups`): Ray carries this module to the node by value, so a node needs Ray and the
Claude Code CLI, not aether-mcp. Everything the worker is told comes in the job, built by the server; the only
secret in it is the worker's own gateway key, refused at the gateway once the worker has ended.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .groups import MARK_VARIABLE, die_with_parent, kill_marked, signal_group

JOB_PREFIX = "aether-job-"
MAX_LINE = 64 * 1024 * 1024
STDERR_TAIL = 4096
BASE_REF = "refs/aether/base"


@dataclass(frozen=True)
class NodeJob:
    """One remote worker, as its node runs it."""

    worker_id: str  # also the mark its processes carry
    command: list[str]  # the argument list; its first item is replaced by `cli`
    cli: str  # the Claude Code CLI on the node: a path, or a name on the node's PATH
    files: dict[int, tuple[str, bytes]]  # argument index -> a file (name, content) made 0600 in the job's folder
    env: dict[str, str]  # the worker's own variables; the rest of its environment is the node's `keep_env`
    keep_env: tuple[str, ...]
    task: bytes
    subdir: str  # where in the checkout it runs
    branch: str | None  # with worktree isolation: the branch it works on, whose commits come back
    grace_s: float = 2.0


def run_job(job: NodeJob, bundle: tuple[str, bytes]) -> Iterator[tuple[Any, ...]]:
    """Run `job` in a checkout of the base commit `bundle` holds (its ref, its bytes). Yields ("node", its Ray
    id), then ("line", bytes) for each line of the worker's stream, then ("exit", code, stderr tail), then
    ("commits", bundle or None).

    Cancelled (the task is interrupted) or failing, the finally clause ends the worker's processes and removes its
    folder. If the node's Ray worker is killed outright, the kernel kills the CLI with it, and the next job on the
    node removes what was left."""
    import ray  # on the node, inside a Ray task

    yield ("node", ray.get_runtime_context().get_node_id())
    sweep_stale_jobs()
    folder = Path(tempfile.mkdtemp(prefix=f"{JOB_PREFIX}{os.getpid()}-{job.worker_id}-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        checkout = folder / "checkout"
        _checkout(folder / "base.bundle", bundle, checkout, job.branch)
        command = list(job.command)
        command[0] = shutil.which(job.cli) or job.cli
        for index, (name, content) in job.files.items():
            path = folder / name
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(content)
            command[index] = str(path)
        env = {name: os.environ[name] for name in job.keep_env if name in os.environ}
        # The CLI's own state (sessions, caches) lives in the job's folder, and goes with it.
        env |= job.env | {"CLAUDE_CONFIG_DIR": str(folder / "config"), MARK_VARIABLE: job.worker_id}
        stderr_path = folder / "stderr"
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(
                command,
                cwd=checkout / job.subdir,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 (the one thing done between fork and exec)
            )
        threading.Thread(target=_feed, args=(process, job.task), daemon=True).start()
        assert process.stdout is not None
        while line := process.stdout.readline(MAX_LINE):
            yield ("line", line)
        try:
            code: int | None = process.wait(job.grace_s)
        except subprocess.TimeoutExpired:
            code = None
        _end(process, job.worker_id)
        yield ("exit", code, stderr_path.read_bytes()[-STDERR_TAIL:].decode("utf-8", "replace"))
        yield ("commits", _commits(checkout, folder / "commits.bundle", job.branch))
    finally:
        if process is not None:
            _end(process, job.worker_id)
        shutil.rmtree(folder, ignore_errors=True)


def _checkout(bundle_path: Path, bundle: tuple[str, bytes], checkout: Path, branch: str | None) -> None:
    ref, data = bundle
    bundle_path.write_bytes(data)
    _git(checkout.parent, "init", "--quiet", str(checkout))
    _git(checkout, "fetch", "--quiet", str(bundle_path), ref)
    _git(checkout, "checkout", "--quiet", "-b", branch or "aether/remote", "FETCH_HEAD")
    _git(checkout, "update-ref", BASE_REF, "FETCH_HEAD")


def _commits(checkout: Path, path: Path, branch: str | None) -> bytes | None:
    """What the worker committed on its branch, as a bundle; None when it committed nothing (or was not asked)."""
    if branch is None or not _git(checkout, "rev-list", f"{BASE_REF}..refs/heads/{branch}"):
        return None
    _git(checkout, "bundle", "create", "--quiet", str(path), f"refs/heads/{branch}", f"^{BASE_REF}")
    return path.read_bytes()


def _git(where: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, timeout=120, check=False)
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"git {args[0]} failed on the node: {said[-1] if said else done.returncode}")
    return done.stdout.decode("utf-8", "replace").strip()


def _feed(process: subprocess.Popen[bytes], task: bytes) -> None:
    assert process.stdin is not None
    try:
        process.stdin.write(task)
        process.stdin.close()
    except OSError:
        pass  # the worker died early; its exit status says why


def _end(process: subprocess.Popen[bytes], mark: str) -> None:
    """The worker's group and every process with its mark: SIGTERM, a moment, then SIGKILL."""
    if process.poll() is None:
        signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(2.0)
    signal_group(process.pid, signal.SIGKILL)
    kill_marked(mark)
    if process.poll() is None:
        process.wait()


def sweep_stale_jobs() -> None:
    """Remove what jobs whose Ray worker died outright left on this node: their processes, then their folders."""
    for entry in Path(tempfile.gettempdir()).glob(f"{JOB_PREFIX}*"):
        pid, _, rest = entry.name.removeprefix(JOB_PREFIX).partition("-")
        worker_id = rest.rpartition("-")[0]
        if not pid.isdigit() or not worker_id or _alive(int(pid)) or entry.stat().st_uid != os.getuid():
            continue  # running, or not one of ours (another user's folder must not choose what we kill)
        kill_marked(worker_id)
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_node(cli: str, host: str, port: int) -> tuple[str, str | None]:
    """What `doctor` asks of a node: the CLI's version (or why it does not run), and whether this node reaches
    `host`:`port`, where the gateway would listen (None: it does)."""
    import socket

    try:
        done = subprocess.run(
            [shutil.which(cli) or cli, "--version"], capture_output=True, timeout=60, check=False, text=True
        )
        version = done.stdout.strip() or f"no version (exit {done.returncode}): {done.stderr.strip()[-200:]}"
        runs = done.returncode == 0 and bool(done.stdout.strip())
    except (OSError, subprocess.TimeoutExpired) as exc:
        version, runs = f"{cli} does not run: {exc}", False
    try:
        socket.create_connection((host, port), timeout=5).close()
        reach = None
    except OSError as exc:
        reach = str(exc)
    return (version if runs else f"!{version}"), reach
