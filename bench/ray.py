"""Workers on a Ray cluster against the same workers run here, in the same run, interleaved.

    python -m bench.ray            # 5 one-turn workers each way, then waves of 8 (3 runs each way)
    python -m bench.ray --quick    # 1 one-turn worker each way and a wave of 2, once: a smoke test

The cluster is `ray.cluster_utils.Cluster` on this machine: a head with no CPUs and two nodes of 4 CPUs each,
all on loopback, so a remote wave of 8 lands 4 on each node and shares this machine's cores with nothing but
itself. What is measured is therefore what running remotely adds (the task, the bundle and checkout, the
stream through Ray, the commits back), not what more machines give. The colony runs in this process, as the
MCP server would; its model is the local backend answering at once, through the gateway. Figures:

- a one-turn worker, spawn to recorded result: remote against local (median), and the first remote worker
  of a server on its own (it connects to the cluster, and the nodes start their Ray workers);
- a wave of 8 builders in worktrees, each committing one file, spawn to the last result: spread over the two
  nodes against the same wave here (median of the runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from aether_mcp.profile.store import ProfileStore
from aether_mcp.testing.backend import LocalBackend, Turn
from aether_mcp.workers.claude_cli import _bundled_cli
from aether_mcp.workers.colony import Colony
from aether_mcp.workers.request import spawn_request

TOKEN = "sk-bench-ray-4f1e"  # noqa: S105 (the local backend's, made up)
RAY_ON_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
COMMIT = "git branch --show-current > a.txt && git add a.txt && git -c user.email=b@x -c user.name=b commit -qm w"


@contextmanager
def local_cluster(root: Path) -> Iterator[str]:
    """A head and two 4-CPU nodes on loopback; its address."""
    saved = dict(os.environ)
    os.environ |= RAY_ON_LOOPBACK | {"TMPDIR": str(root)}
    try:
        from ray.cluster_utils import Cluster

        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1", "node_name": "head"}
        )
        for name in ("node-a", "node-b"):
            cluster.add_node(num_cpus=4, node_ip_address="127.0.0.1", node_name=name)
    finally:
        os.environ.clear()
        os.environ.update(saved | RAY_ON_LOOPBACK)  # this process dials the cluster on loopback too
    try:
        yield str(cluster.address)
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]


def project(root: Path, backend: LocalBackend, address: str) -> Path:
    """A git repository with one commit, and a trusted profile: builders on kimi-k2.5 through the backend."""
    repo = root / "project"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / ".gitignore").write_text(".aether/\n")
    (repo / "README.md").write_text("bench\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=b@x", "-c", "user.name=b", "commit", "-qm", "1"], check=True
    )
    profile = repo / "model-profiles.yaml"
    profile.write_text(
        "worker_models:\n  builder: kimi-k2.5\n"
        f"proxy:\n  endpoint: {backend.url}\n  auth_token: {TOKEN}\n"
        "workers:\n  max_concurrent_workers: 8\n"
        f"  ray:\n    address: {address}\n    gateway_host: 127.0.0.1\n    claude_cli: {_bundled_cli()}\n"
    )
    ProfileStore(profile).trust(profile)
    return profile


async def one(colony: Colony, runs_on: str, **options: Any) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    worker = await colony.spawn(spawn_request(caste="builder", task="say ok", runs_on=runs_on, **options))
    await worker.done.wait()
    result = worker.record()
    if result.status != "succeeded" or not result.routing_verified:
        raise SystemExit(f"a {runs_on} worker did not succeed verified: {result.status} {result.error}")
    return time.monotonic() - started, result.model_dump()


async def wave(colony: Colony, runs_on: str, count: int) -> tuple[float, set[str]]:
    started = time.monotonic()
    workers = [
        await colony.spawn(spawn_request(caste="builder", task="commit", runs_on=runs_on, isolation="worktree"))
        for _ in range(count)
    ]
    for worker in workers:
        await worker.done.wait()
    took = time.monotonic() - started
    records = [w.record() for w in workers]
    bad = [r for r in records if r.status != "succeeded" or not r.routing_verified or len(r.commits) != 1]
    if bad:
        raise SystemExit(f"a {runs_on} wave did not land: {[(r.status, r.error) for r in bad]}")
    return took, {r.node or "local" for r in records}


async def measure(profile: Path, backend: LocalBackend, singles: int, waves: int, size: int) -> None:
    store = ProfileStore(profile, cwd=profile.parent)
    async with Colony(store) as colony:
        backend.on_task["kimi-k2.5"] = Turn(text="ok")
        first, _ = await one(colony, "ray")
        print(f"first remote worker of the server (connects, the nodes start Ray workers): {first:.2f} s")
        local, remote = [], []
        for _ in range(singles):  # interleaved: drift in the machine's load falls on both alike
            local.append((await one(colony, "local"))[0])
            remote.append((await one(colony, "ray"))[0])
        ml, mr = statistics.median(local), statistics.median(remote)
        print(f"one-turn worker: local {ml:.2f} s, remote {mr:.2f} s (median of {singles}): {mr / ml:.2f}x")
        backend.on_task["kimi-k2.5"] = Turn(tool="Bash", tool_input={"command": COMMIT})
        local_waves, remote_waves, spread = [], [], set()
        for _ in range(waves):
            local_waves.append((await wave(colony, "local", size))[0])
            took, nodes = await wave(colony, "ray", size)
            remote_waves.append(took)
            spread |= nodes
        wl, wr = statistics.median(local_waves), statistics.median(remote_waves)
        names = sorted({n.split(" ")[0] for n in spread})
        print(
            f"wave of {size} in worktrees: local {wl:.2f} s, over {', '.join(names)} {wr:.2f} s "
            f"(median of {waves}): {wr / wl:.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ray", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one worker each way and a wave of 2, once")
    args = parser.parse_args(argv)
    singles, waves, size = (1, 1, 2) if args.quick else (5, 3, 8)
    root = Path(tempfile.mkdtemp(prefix="aether-bench-ray-"))
    with LocalBackend(token=TOKEN, models=["kimi-k2.5"]) as backend, local_cluster(root) as address:
        profile = project(root, backend, address)
        os.chdir(profile.parent)
        anyio.run(measure, profile, backend, singles, waves, size)
    subprocess.run(["rm", "-rf", str(root)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
