"""The Ray cluster that remote workers run on: reached on first use, each worker one task on one of its nodes.

Ray is imported here alone, and only when a spawn or `doctor` needs the cluster: a server whose profile names
none never loads it. The node's side of a worker (`node.py`, with `groups.py`) travels with each task by value,
so a node needs Ray and the Claude Code CLI, not aether-mcp. Nothing is retried: a worker's work may have had
effects, so a task whose node is lost ends that worker, and the user decides what runs again.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from ..errors import AetherError
from ..git import git
from ..profile.schema import RaySection
from . import groups, node

CONNECT_TIMEOUT_S = 5.0
CONNECT_WAIT_S = 30.0
# How long a cancelled task has to clean up on its node before its Ray worker is killed outright.
STOP_GRACE_S = 10.0
NAMESPACE = "aether-mcp"
# `ray start --head` on this machine writes the address `auto` means here; RAY_ADDRESS comes first, as for Ray.
CURRENT_CLUSTER_FILE = Path("/tmp/ray/ray_current_cluster")  # noqa: S108 (Ray's own, fixed location)
UNREACHABLE_FIX = (
    "Start the cluster (ray start --head on its head node), or correct workers.ray.address in your profile "
    "(then run aether-mcp trust)"
)


class RemoteWorkerError(AetherError):
    """A remote worker's task failed on its node, or its node was lost."""


@dataclass(frozen=True)
class Reach:
    """Where the cluster's head is, and this machine's own address on the way there."""

    address: str  # host:port
    local_host: str  # where the cluster's nodes reach this machine's gateway


def reach(settings: RaySection, environ: Mapping[str, str]) -> Reach:
    """The cluster's head, answering, or an error with the fix at once (Ray itself would wait for minutes)."""
    address = settings.address
    if address == "auto":
        address = environ.get("RAY_ADDRESS") or _current_cluster()
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise AetherError(f"workers.ray.address {address!r} is not host:port (or auto)", UNREACHABLE_FIX)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S) as probe:
            local_host = probe.getsockname()[0]
    except OSError as exc:
        raise AetherError(f"The Ray cluster at {address} cannot be reached ({exc})", UNREACHABLE_FIX) from None
    return Reach(f"{host}:{port}", settings.gateway_host or local_host)


def _current_cluster() -> str:
    try:
        return CURRENT_CLUSTER_FILE.read_text().strip().splitlines()[0]
    except (OSError, IndexError):
        raise AetherError(
            "workers.ray.address is auto, and no Ray cluster runs on this machine (RAY_ADDRESS is not set)",
            UNREACHABLE_FIX,
        ) from None


@dataclass(frozen=True)
class NodeState:
    node_id: str
    name: str
    alive: bool


class RayCluster:
    """This server's connection to one Ray cluster, and the base commits it has sent there."""

    def __init__(self, settings: RaySection, environ: Mapping[str, str]) -> None:
        self.settings = settings
        self._environ = environ
        self._reach: Reach | None = None
        self._task: Any = None  # node.run_job as a Ray task, once connected
        self._names: dict[str, str] = {}
        self._bundles: dict[tuple[Path, str], Any] = {}  # (repository, commit) -> its bundle in the object store
        self._lock = threading.Lock()
        self._owns_connection = False  # this object's ray.init: its close disconnects

    @property
    def connected(self) -> bool:
        return self._task is not None

    @property
    def gateway_host(self) -> str:
        """Where the gateway must listen for the cluster's nodes: reaching the head tells."""
        if self._reach is None:
            self._reach = reach(self.settings, self._environ)
        return self._reach.local_host

    async def connect(self) -> None:
        """Reach the cluster (off the loop), once; a cluster that does not take the connection in CONNECT_WAIT_S
        fails the spawn (Ray would keep trying for minutes)."""
        if self._task is None:
            with anyio.move_on_after(CONNECT_WAIT_S):
                await anyio.to_thread.run_sync(self._connect, abandon_on_cancel=True)
            if self._task is None:
                raise self._slow_head()

    def connect_blocking(self) -> None:
        """`connect` for a caller with no event loop (doctor), bounded alike."""
        if self._task is None:
            pool = ThreadPoolExecutor(1)
            try:
                pool.submit(self._connect).result(timeout=CONNECT_WAIT_S)
            except FutureTimeout:
                raise self._slow_head() from None
            finally:
                pool.shutdown(wait=False)

    def _slow_head(self) -> AetherError:
        address = self._reach.address if self._reach else self.settings.address
        return AetherError(
            f"The Ray cluster at {address} answers, but did not take this server's connection in "
            f"{CONNECT_WAIT_S:g} s (its head may advertise an address this machine cannot reach)",
            UNREACHABLE_FIX,
        )

    def _connect(self) -> None:
        with self._lock:
            if self._task is not None:
                return
            if self._reach is None:  # probed already when the spawn placed its gateway
                self._reach = reach(self.settings, self._environ)
            import ray

            if ray.is_initialized():  # by another RayCluster of this process (doctor's, beside the colony's)
                if ray.get_runtime_context().gcs_address != self._reach.address:
                    raise AetherError(
                        "This server is connected to another Ray cluster already",
                        "Restart the server after changing workers.ray.address",
                    )
            else:
                self._init(ray)
            # The node's side goes with each task: nodes need Ray and the CLI, not aether-mcp.
            for module in (node, groups):
                ray.cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]
            self._task = ray.remote(node.run_job)

    def _init(self, ray: Any) -> None:
        assert self._reach is not None
        self._owns_connection = True
        ray.init(
            address=self._reach.address,
            namespace=NAMESPACE,
            _node_ip_address=self._reach.local_host,
            log_to_driver=False,  # the nodes' output is not the server's: stdout carries MCP
            logging_level=logging.WARNING,
        )

    def close(self) -> None:
        """Disconnect, if this object connected. Ray's driver prints the cluster's error messages (a node's
        death among them) to stdout from a thread of its own: it must stop while stdout is still diverted from
        the MCP wire, before a stdio server gives the descriptor back."""
        if self._owns_connection:
            import ray

            ray.shutdown()
            self._owns_connection = False
            self._task = None

    def check_nodes(self) -> list[tuple[NodeState, str, str | None]]:
        """doctor's look at each live node: the CLI's version there ('!' and why, when it does not run), and
        whether the node reaches where the gateway would listen (None: it does). Connects first."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.connect_blocking()
        listener = socket.create_server((self.gateway_host, 0))  # where the gateway would listen, for a moment
        try:
            port = listener.getsockname()[1]
            alive = [state for state in self.nodes() if state.alive]
            check = ray.remote(node.check_node)
            refs = [
                check.options(
                    num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(state.node_id, False)
                ).remote(self.settings.claude_cli, self.gateway_host, port)
                for state in alive
            ]
            answers = ray.get(refs, timeout=120)
        finally:
            listener.close()
        return [(state, version, reach) for state, (version, reach) in zip(alive, answers, strict=True)]

    def nodes(self) -> list[NodeState]:
        """The cluster's worker nodes (those with CPUs to run a worker), as its head sees them now."""
        import ray

        found = [
            NodeState(n["NodeID"], n.get("NodeName") or n["NodeManagerAddress"], bool(n["Alive"]))
            for n in ray.nodes()  # type: ignore[no-untyped-call]
            if n.get("Resources", {}).get("CPU") or not n["Alive"]
        ]
        self._names |= {state.node_id: state.name for state in found}
        return found

    def node_name(self, node_id: str) -> str:
        """A node as records show it: its name (its address unless named) and the start of its id."""
        if node_id not in self._names:
            self.nodes()
        return f"{self._names.get(node_id, '?')} ({node_id[:8]})"

    async def bundle(self, repo: Path, commit: str) -> Any:
        """The bundle of `commit` (its history up to it) in the cluster's object store, made once per commit."""
        if (repo, commit) not in self._bundles:
            self._bundles[(repo, commit)] = await anyio.to_thread.run_sync(self._make_bundle, repo, commit)
        return self._bundles[(repo, commit)]

    def _make_bundle(self, repo: Path, commit: str) -> Any:
        import ray

        ref = f"{node.BASE_REF}-{commit}"  # git bundles refs, not bare commits: one of ours, for a moment
        with self._lock:
            git(repo, "update-ref", ref, commit)
            try:
                data = _bundle_bytes(repo, ref)
            finally:
                git(repo, "update-ref", "-d", ref)
        return ray.put((ref, data))

    @asynccontextmanager
    async def running(self, job: node.NodeJob, bundle: Any) -> AsyncIterator[AsyncIterator[tuple[Any, ...]]]:
        """Start `job` on a node; inside, its messages (see `node.run_job`). Leaving before the last one cancels
        the task, and waits (shielded, bounded) until its node has cleaned up."""
        from ray.exceptions import NodeDiedError, RayError

        task = self._task.options(
            num_cpus=self.settings.num_cpus,
            max_retries=0,  # never run a worker twice behind the user's back
            scheduling_strategy="SPREAD",
        )
        generator = task.remote(job, bundle)
        state: dict[str, Any] = {"node": "", "done": False}

        async def messages() -> AsyncIterator[tuple[Any, ...]]:
            try:
                async for ref in generator:
                    message = await ref
                    if message[0] == "node":
                        state["node"] = message[1]
                    yield message
            except RayError as exc:
                raise await self._failure(state["node"], exc, lost=isinstance(exc, NodeDiedError)) from None
            state["done"] = True

        try:
            yield messages()
        finally:
            if not state["done"]:
                with anyio.CancelScope(shield=True):
                    await self._stop(generator)

    async def _stop(self, generator: Any) -> None:
        import ray

        ray.cancel(generator)  # the task's finally clause ends the worker and removes its folder
        with anyio.move_on_after(STOP_GRACE_S) as waited:
            try:
                async for ref in generator:
                    await ref
            except Exception:  # noqa: BLE001, S110 (cancelled, as asked)
                pass
        if waited.cancelled_caught:
            ray.cancel(generator, force=True)  # its Ray worker dies; the kernel kills the CLI with it

    async def _failure(self, node_id: str, exc: Exception, *, lost: bool) -> RemoteWorkerError:
        """What a failed task says: its node lost (as Ray says, or as its head sees it now), or its own error,
        naming the node."""
        if not node_id:
            return RemoteWorkerError(f"The remote worker could not start on the cluster ({_first_line(exc)})")
        states = await anyio.to_thread.run_sync(self.nodes)
        named = self.node_name(node_id)
        if lost or not any(state.node_id == node_id and state.alive for state in states):
            return RemoteWorkerError(
                f"Its node {named} was lost mid-run, and the worker with it",
                "Nothing was retried, since its work may have had effects: spawn it again if it should run",
            )
        return RemoteWorkerError(f"The remote worker failed on node {named}: {_first_line(exc)}")


def _bundle_bytes(repo: Path, ref: str) -> bytes:
    import subprocess

    done = subprocess.run(
        ["git", "-C", str(repo), "bundle", "create", "--quiet", "-", ref], capture_output=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise AetherError(f"git bundle failed: {done.stderr.decode('utf-8', 'replace').strip()[-300:]}")
    return done.stdout


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
