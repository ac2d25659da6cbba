"""Workers on a Ray cluster: a real local cluster (a head and two nodes, all on loopback), the real Claude Code
CLI on the nodes, the server over a real stdio pipe, and the local backend as the model.

Each node lends two CPUs and a worker takes one, so a wave of four lands two on each node; the tests that need
one worker per node ask two CPUs a worker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    TOKEN,
    error_text,
    git,
    live_processes,
    processes_with,
    run_aether,
    stdio_server,
    structured,
    wait_for,
)
from helpers import write_profile as write_colony_profile
from mcp import ClientSession
from mcp.client.stdio import stdio_client

from aether_mcp import procs
from aether_mcp.testing.backend import LocalBackend, Turn
from aether_mcp.workers.claude_cli import _bundled_cli
from aether_mcp.workers.node import JOB_PREFIX

pytestmark = pytest.mark.anyio

# On the node: the branch it works on into same.txt, and the credential it was given into key.txt, committed.
COMMIT_BRANCH_AND_KEY = (
    'git branch --show-current > same.txt && printf %s "$ANTHROPIC_AUTH_TOKEN" > key.txt && git add . && '
    'git -c user.email=w@x -c user.name=w commit -qm "from $(git branch --show-current)"'
)


class LocalCluster:
    """ray.cluster_utils.Cluster on loopback, its nodes' temporary files in a folder of their own."""

    def __init__(self, root: Path) -> None:
        self.tmp = root / "nodes-tmp"
        self.tmp.mkdir()
        saved = dict(os.environ)
        # Nothing leaves loopback: every node on 127.0.0.1, and Ray's own check for it off (read as Ray loads).
        os.environ |= RAY_ON_LOOPBACK | {"TMPDIR": str(self.tmp)}
        try:
            from ray.cluster_utils import Cluster

            self.cluster = Cluster(
                initialize_head=True,
                head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1", "node_name": "head"},
            )
            self.nodes = [self.add("node-a"), self.add("node-b")]
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def add(self, name: str) -> Any:
        saved = dict(os.environ)
        os.environ |= RAY_ON_LOOPBACK | {"TMPDIR": str(self.tmp)}
        try:
            return self.cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1", node_name=name)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def job_folders(self) -> list[Path]:
        return list(self.tmp.glob(f"{JOB_PREFIX}*"))


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalCluster]:
    root = Path(tempfile.mkdtemp(prefix="aether-ray-"))  # short: Ray's socket paths must fit in 107 bytes
    cluster = LocalCluster(root)
    try:
        yield cluster
    finally:
        cluster.cluster.shutdown()
        subprocess.run(["rm", "-rf", str(root)], check=False)


def ray_profile(repo: Path, backend: LocalBackend, cluster: LocalCluster, castes: str, num_cpus: int = 1) -> Path:
    """The repository's profile, with the cluster and the castes `castes` sends there; trusted."""
    cli = _bundled_cli()
    assert cli is not None
    extra = (
        "workers:\n"
        "  ray:\n"
        f"    address: {cluster.address}\n"
        "    gateway_host: 127.0.0.1\n"
        f"    claude_cli: {cli}\n"
        f"    num_cpus: {num_cpus}\n"
        "  castes:\n" + "".join(f"    {caste}: {{runs_on: ray}}\n" for caste in castes.split())
    )
    return write_colony_profile(repo / "model-profiles.yaml", backend.url, extra)


RAY_ON_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # else Ray dials this machine's outward address


def ray_server(repo: Path) -> Any:
    """The stdio server of `repo`, which dials the cluster on loopback as its nodes do."""
    params = stdio_server(repo)
    params.env = (params.env or {}) | RAY_ON_LOOPBACK
    return params


async def call(session: ClientSession, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return structured(await session.call_tool(tool, arguments))


async def test_a_wave_of_four_builders_spreads_over_two_nodes_and_lands_its_branches(
    repo: Path, backend: LocalBackend, ray_cluster: LocalCluster
) -> None:
    ray_profile(repo, backend, ray_cluster, "builder")
    backend.on_task["kimi-k2.5"] = Turn(tool="Bash", tool_input={"command": COMMIT_BRANCH_AND_KEY})
    head = git(repo, "rev-parse", "HEAD")
    (repo / "uncommitted.txt").write_text("the user's own work in progress\n")
    async with stdio_client(ray_server(repo)) as streams, ClientSession(*streams) as session:
        await session.initialize()
        started = [
            await call(
                session,
                "spawn_worker",
                {"caste": "builder", "task": "commit", "isolation": "worktree", "wait": False},
            )
            for _ in range(4)
        ]
        done = [await call(session, "get_worker", {"worker_id": s["worker_id"], "wait_s": 120}) for s in started]
    assert [d["status"] for d in done] == ["succeeded"] * 4, [d["error"] for d in done]
    nodes = [d["node"] for d in done]
    assert {n.split(" ")[0] for n in nodes} == {"node-a", "node-b"}, nodes
    keys = set()
    for result in done:
        branch = result["branch"]
        assert result["routing_verified"] and result["requests_by_model"].keys() == {"kimi-k2.5"}, result
        assert result["base"] == head and len(result["commits"]) == 1, result
        assert result["commits"][0].endswith(f"from {branch}")
        # its commit landed as its branch here, made in a checkout of the base on its node
        assert git(repo, "show", f"{branch}:same.txt") == branch
        assert git(repo, "rev-parse", f"{branch}~1") == head
        # the user's uncommitted file never travelled
        assert "uncommitted.txt" not in git(repo, "ls-tree", "-r", "--name-only", branch)
        keys.add(git(repo, "show", f"{branch}:key.txt"))
    # each worker held its own gateway key on its node, never the proxy's token
    assert len(keys) == 4 and TOKEN not in keys and all(k.startswith("sk-aether-") or k for k in keys)
    # the token is in no process of the cluster and in no file its nodes wrote
    assert not [p.pid for p in live_processes() if TOKEN.encode() in p.environ + p.cmdline]
    for path in ray_cluster.tmp.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    # nothing of the workers is left on the nodes
    assert ray_cluster.job_folders() == []
    log = [json.loads(line) for line in (repo / ".aether" / "spawn-log.jsonl").read_text().splitlines()]
    assert sorted(entry["node"] for entry in log) == sorted(nodes)
    shown = run_aether("workers", cwd=repo)
    assert shown.returncode == 0 and all(node.split(" ")[0] in shown.stdout for node in nodes), shown.stdout


async def running_on_a_node(session: ClientSession, worker_id: str) -> dict[str, Any]:
    """The worker once its node runs its CLI's first tool call."""
    for _ in range(120):
        found = await call(session, "get_worker", {"worker_id": worker_id, "wait_s": 0.5})
        if found["node"] and processes_with(f"AETHER_WORKER_MARK={worker_id}"):
            return found
    raise AssertionError(f"{worker_id} never ran on a node")


async def test_cancel_ends_a_remote_worker_on_its_node_and_top_shows_its_node(
    repo: Path, backend: LocalBackend, ray_cluster: LocalCluster
) -> None:
    from helpers import pilot_until, table_cells

    from aether_mcp.adapters.top.app import ColonyApp

    ray_profile(repo, backend, ray_cluster, "builder")
    backend.on_task["kimi-k2.5"] = Turn(tool="Bash", tool_input={"command": "sleep 300"})
    app = ColonyApp(repo / ".aether", repo)
    async with stdio_client(ray_server(repo)) as streams, ClientSession(*streams) as session:
        await session.initialize()
        async with app.run_test(size=(160, 36)) as pilot:
            worker_id = (await call(session, "spawn_worker", {"caste": "builder", "task": "wait", "wait": False}))[
                "worker_id"
            ]
            running = await running_on_a_node(session, worker_id)
            name = running["node"].split(" ")[0]
            assert name in {"node-a", "node-b"} and running["status"] == "running"
            await pilot_until(pilot, lambda: table_cells(app).get(worker_id, {}).get("node") == name)
            await call(session, "cancel_worker", {"worker_id": worker_id})
            final = await call(session, "get_worker", {"worker_id": worker_id, "wait_s": 30})
            await pilot_until(pilot, lambda: table_cells(app)[worker_id]["status"] == "■ cancel")
    assert final["status"] == "cancelled" and final["node"] == running["node"]
    # its CLI, the shell and the sleep it started: all gone from the node, with its checkout
    assert await wait_for(lambda: not processes_with(f"AETHER_WORKER_MARK={worker_id}"), 10)
    assert ray_cluster.job_folders() == []


async def test_a_node_lost_mid_run_fails_its_worker_naming_the_node_and_the_other_finishes(
    repo: Path, backend: LocalBackend, ray_cluster: LocalCluster
) -> None:
    ray_profile(repo, backend, ray_cluster, "builder watcher", num_cpus=2)  # one worker fills a node
    # The builder's model does not answer while its node goes: nothing on the node can end its turn first.
    backend.delays["kimi-k2.5"] = 120.0
    backend.on_task["minimax-2.5"] = Turn(tool="Bash", tool_input={"command": "sleep 8"})
    async with stdio_client(ray_server(repo)) as streams, ClientSession(*streams) as session:
        await session.initialize()
        builder = (await call(session, "spawn_worker", {"caste": "builder", "task": "wait", "wait": False}))[
            "worker_id"
        ]
        watcher = (await call(session, "spawn_worker", {"caste": "watcher", "task": "check", "wait": False}))[
            "worker_id"
        ]
        lost = (await running_on_a_node(session, builder))["node"]
        kept = (await running_on_a_node(session, watcher))["node"]
        assert lost != kept
        index = next(i for i, n in enumerate(ray_cluster.nodes) if n.node_id.startswith(lost.split("(")[1][:8]))
        # As a machine goes: its Ray processes, and the process running the builder's task, killed outright.
        task_process = {procs.parent(pid) for pid in processes_with(f"AETHER_WORKER_MARK={builder}")}
        ray_cluster.cluster.remove_node(ray_cluster.nodes[index], allow_graceful=False)
        for pid in task_process - {None, *processes_with(f"AETHER_WORKER_MARK={builder}")}:
            os.kill(pid, signal.SIGKILL)
        failed = await call(session, "get_worker", {"worker_id": builder, "wait_s": 60})
        finished = await call(session, "get_worker", {"worker_id": watcher, "wait_s": 60})
        ray_cluster.nodes[index] = ray_cluster.add(lost.split(" ")[0])  # the next tests have two nodes again
        assert failed["status"] == "failed" and failed["node"] == lost, failed
        assert f"node {lost} was lost mid-run" in failed["error"] and "Nothing was retried" in failed["error"]
        assert finished["status"] == "succeeded" and finished["routing_verified"], finished["error"]
        # the next job on the cluster sweeps what the lost one left: its folder
        backend.delays.pop("kimi-k2.5")
        backend.on_task["kimi-k2.5"] = Turn(text="done")
        again = await call(session, "spawn_worker", {"caste": "builder", "task": "again"})
        assert again["status"] == "succeeded"
    assert await wait_for(lambda: not processes_with(f"AETHER_WORKER_MARK={builder}"), 10)
    assert ray_cluster.job_folders() == []


async def test_an_unreachable_cluster_fails_the_spawn_at_once_with_the_fix(repo: Path, backend: LocalBackend) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    extra = f"workers:\n  ray: {{address: '127.0.0.1:{port}'}}\n  castes:\n    builder: {{runs_on: ray}}\n"
    write_colony_profile(repo / "model-profiles.yaml", backend.url, extra)
    async with stdio_client(ray_server(repo)) as streams, ClientSession(*streams) as session:
        await session.initialize()
        started = time.monotonic()
        refused = await session.call_tool("spawn_worker", {"caste": "builder", "task": "build"})
        took = time.monotonic() - started
        local = await call(session, "spawn_worker", {"caste": "scout", "task": "look"})
    assert refused.is_error and took < 10
    said = error_text(refused)
    assert f"The Ray cluster at 127.0.0.1:{port} cannot be reached" in said and "ray start --head" in said
    assert local["status"] == "succeeded" and local["node"] is None  # the castes that run here are untouched
    assert "kimi-k2.5" not in backend.models_asked()


async def test_a_cloned_profile_cannot_send_workers_to_a_cluster_until_trusted(
    repo: Path, backend: LocalBackend, ray_cluster: LocalCluster
) -> None:
    profile = ray_profile(repo, backend, ray_cluster, "scout")
    trusted_text = profile.read_text()
    # the same profile, pulled with a cluster of someone else's and the builders sent there
    profile.write_text(trusted_text.replace("    scout: {runs_on: ray}\n", "    builder: {runs_on: ray}\n"))
    async with stdio_client(ray_server(repo)) as streams, ClientSession(*streams) as session:
        await session.initialize()
        refused = await session.call_tool("spawn_worker", {"caste": "builder", "task": "build"})
    assert refused.is_error and "workers.castes.builder.runs_on" in error_text(refused)
    assert "aether-mcp trust" in error_text(refused)
    assert ray_cluster.job_folders() == [] and "kimi-k2.5" not in backend.models_asked()


async def test_a_remote_worker_takes_no_follow_up(repo: Path, backend: LocalBackend, ray_cluster: LocalCluster) -> None:
    ray_profile(repo, backend, ray_cluster, "scout")
    async with stdio_client(ray_server(repo)) as streams, ClientSession(*streams) as session:
        await session.initialize()
        done = await call(session, "spawn_worker", {"caste": "scout", "task": "look"})
        refused = await session.call_tool("continue_worker", {"worker_id": done["worker_id"], "message": "more"})
    assert done["status"] == "succeeded" and done["node"] and done["routing_verified"]
    assert refused.is_error and "ran on a Ray node" in error_text(refused)


def test_doctor_checks_the_cluster_node_by_node(repo: Path, backend: LocalBackend, ray_cluster: LocalCluster) -> None:
    ray_profile(repo, backend, ray_cluster, "builder")
    env = dict(os.environ) | RAY_ON_LOOPBACK
    report = run_aether("doctor", "--json", cwd=repo, env=env, timeout=180)
    checks = {c["name"]: c for c in json.loads(report.stdout)["checks"]}
    assert checks["ray cluster"]["verdict"] == "ok" and "2 node(s) alive" in checks["ray cluster"]["detail"]
    nodes = {name: c for name, c in checks.items() if name.startswith("ray node ")}
    assert {name.split(" ")[2] for name in nodes} == {"node-a", "node-b"}
    assert all(c["verdict"] == "ok" and "reaches the gateway's address" in c["detail"] for c in nodes.values())
    # the same cluster, with a CLI the nodes do not have
    profile = repo / "model-profiles.yaml"
    write_colony_profile(
        profile,
        backend.url,
        "workers:" + profile.read_text().split("workers:")[1].replace("claude_cli: /", "claude_cli: /nowhere/"),
    )
    report = run_aether("doctor", "--json", cwd=repo, env=env, timeout=180)
    nodes = [c for c in json.loads(report.stdout)["checks"] if c["name"].startswith("ray node ")]
    assert report.returncode == 1 and len(nodes) == 2
    assert all(c["verdict"] == "fail" and "workers.ray.claude_cli" in c["fix"] for c in nodes)
