"""Running one worker on a Ray node: the job its spec makes, its stream followed as a local worker's is, and
what it committed landed as its branch here.

The job carries the worker's argument list, the files it names, its own variables (routing, and its key at the
gateway) and its task; the node adds its own PATH and HOME. The proxy's token is not in it: the gateway holds
it, here.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import anyio

from ..errors import AetherError
from ..git import find_repository, git
from ..private_files import open_private
from . import worktree
from .cluster import RayCluster
from .node import NodeJob
from .process import STDERR_TAIL, ProgressFn, RunOutcome, follow
from .secrets import worker_secrets
from .spec import (
    ENV_ALLOWLIST,
    WorkerSpec,
    agents_path,
    agents_text,
    build_command,
    build_env,
    mcp_config_path,
    mcp_config_text,
)
from .stream import StreamSummary


def node_job(
    spec: WorkerSpec, environ: Mapping[str, str], key: str, tree: worktree.Worktree | None
) -> tuple[NodeJob, Path, str]:
    """The job for `spec`'s worker, and the repository and commit its node checks out."""
    assert spec.cluster is not None
    if tree is not None:
        root, commit = tree.path, tree.base
    else:
        found = find_repository(spec.cwd)
        if found is None:
            raise AetherError(
                f"A remote worker runs in a checkout of the project's commit, and {spec.cwd} is not in a git "
                "repository",
                "Run it locally (runs_on: local), or make the project a git repository with a first commit",
            )
        root, commit = found, git(found, "rev-parse", "--verify", "HEAD^{commit}")
    command = build_command(spec)
    contents = {str(mcp_config_path(spec)): ("mcp.json", mcp_config_text(spec))}
    if spec.agent is not None:
        contents[str(agents_path(spec))] = ("agents.json", agents_text(spec))
    files = {i: (contents[a][0], contents[a][1].encode()) for i, a in enumerate(command) if a in contents}
    passed = {name: environ[name] for name in spec.env_passthrough if name in environ}
    job = NodeJob(
        worker_id=spec.worker_id,
        command=command,
        cli=spec.cluster.claude_cli,
        files=files,
        env=build_env(spec, passed, key),
        keep_env=ENV_ALLOWLIST,
        task=spec.task.encode(),
        subdir=str(spec.cwd.relative_to(root)),
        branch=tree.branch if tree is not None else None,
    )
    return job, (tree.repo if tree is not None else root), commit


async def run_remote_worker(
    spec: WorkerSpec,
    environ: Mapping[str, str],
    cluster: RayCluster,
    *,
    key: str,
    tree: worktree.Worktree | None,
    on_progress: ProgressFn,
    on_node: Callable[[str], None],
) -> RunOutcome:
    """Run the worker on a node of `cluster` to its end, following its stream to its transcript here; with a
    worktree, what it committed lands on its branch. Cancelled or timed out, the task is stopped on its node."""
    started = time.monotonic()
    await cluster.connect()
    job, repo, commit = await anyio.to_thread.run_sync(node_job, spec, environ, key, tree)
    bundle = await cluster.bundle(repo, commit)
    summary = StreamSummary()
    end: dict[str, object] = {"code": None, "stderr": "", "commits": None}

    async def lines(messages: AsyncIterator[tuple[object, ...]]) -> AsyncIterator[bytes | None]:
        async for kind, *values in messages:
            if kind == "node":  # named from the head's node table: a call to the head, off the loop
                on_node(await anyio.to_thread.run_sync(cluster.node_name, str(values[0])))
            elif kind == "line":
                yield values[0]  # type: ignore[misc]
            elif kind == "exit":
                end["code"], end["stderr"] = values
            elif kind == "commits":
                end["commits"] = values[0]

    with os.fdopen(open_private(spec.transcript_path, spec.server_dir), "wb") as transcript:
        with anyio.move_on_after(spec.settings.timeout_s) as deadline:
            async with cluster.running(job, bundle) as messages:
                stream = lines(messages)
                await follow(stream, transcript, worker_secrets(spec.settings, environ), summary, on_progress)
                async for _ in stream:  # after the result: the exit, and the commits
                    pass
    commits = end["commits"]
    if tree is not None and isinstance(commits, bytes):
        await anyio.to_thread.run_sync(_land, tree, commits)
    code = end["code"]
    return RunOutcome(
        exit_code=code if isinstance(code, int) else None,
        timed_out=deadline.cancelled_caught,
        summary=summary,
        stderr_tail=str(end["stderr"])[-STDERR_TAIL:],
        duration_s=time.monotonic() - started,
        process=None,
    )


def _land(tree: worktree.Worktree, bundle: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".bundle") as file:
        file.write(bundle)
        file.flush()
        worktree.land(tree, Path(file.name))
