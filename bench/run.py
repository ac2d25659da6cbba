"""The benchmark suite: every figure a ratio against a baseline measured in the same run, interleaved.

    python -m bench                 # full run, writes docs/benchmarks.md
    python -m bench --quick         # tiny counts, prints only (a smoke test, not a result)

Everything runs on loopback: the workers are the real Claude Code CLI talking
to the project's local backend, the servers are started over real stdio pipes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters, types

from aether_mcp.private_files import user_config_dir
from aether_mcp.profile.agents import AgentScan
from aether_mcp.profile.catalog import CasteCatalog
from aether_mcp.profile.parsing import parse_profile
from aether_mcp.profile.store import ProfileStore
from aether_mcp.profile.trust import TrustStore
from aether_mcp.testing.backend import LocalBackend
from aether_mcp.workers.claude_cli import find_cli
from aether_mcp.workers.gateway import Gateway
from aether_mcp.workers.request import SpawnRequest
from aether_mcp.workers.spec import build_command, build_env, build_spec, write_worker_files
from aether_mcp.workers.stream import user_message
from aether_mcp.workers.wire import KeyRouter, Lease

ROOT = Path(__file__).resolve().parent.parent
HELLO = Path(__file__).resolve().parent / "hello_server.py"
TOKEN = "sk-bench-token"  # noqa: S105 (the local backend's throwaway)
MODELS = ["kimi-k2.5", "glm-5", "minimax-2.5"]
AETHER_CASTES = [
    "ambassador",
    "archaeologist",
    "architect",
    "auditor",
    "builder",
    "chaos",
    "chronicler",
    "fixer",
    "gatekeeper",
    "includer",
    "keeper",
    "measurer",
    "medic",
    "oracle",
    "porter",
    "probe",
    "queen",
    "route-setter",
    "sage",
    "scout",
    "surveyor-disciplines",
    "surveyor-nest",
    "surveyor-pathogens",
    "surveyor-provisions",
    "tracker",
    "watcher",
    "weaver",
]


@dataclass
class Row:
    figure: str
    baseline: str
    measured: str
    ratio: float | None
    target: str
    met: bool | None
    note: str = ""


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def spread(values: list[float], unit: float = 1000, suffix: str = "ms") -> str:
    """Median with the interquartile range: stable enough on a noisy 2-core machine to compare."""
    if len(values) < 4:
        return f"{median(values) * unit:.1f} {suffix} (n={len(values)})"
    q = statistics.quantiles(values, n=4)
    return f"{median(values) * unit:.1f} {suffix} (IQR {q[0] * unit:.1f}-{q[2] * unit:.1f}, n={len(values)})"


async def interleaved(
    a: Callable[[], Awaitable[float]], b: Callable[[], Awaitable[float]], n: int
) -> tuple[list[float], list[float]]:
    """A B, B A, A B, ...: both sides see the same drift in machine load."""
    xs, ys = [], []
    for i in range(n):
        if i % 2 == 0:
            xs.append(await a())
            ys.append(await b())
        else:
            ys.append(await b())
            xs.append(await a())
    return xs, ys


class Bench:
    def __init__(self, quick: bool, folder: Path) -> None:
        self.quick = quick
        self.folder = folder
        self.home = folder / "home"
        self.home.mkdir()
        self.env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TMPDIR", "USER", "SHELL")}
        self.env["HOME"] = str(self.home)
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        self.rows: list[Row] = []

    def n(self, full: int, quick: int = 2) -> int:
        return quick if self.quick else full

    def profile(self, endpoint: str, castes: int = 3, extra: str = "") -> Path:
        path = self.folder / f"profile-{castes}-{abs(hash(extra))}.yaml"
        lines = ["worker_models:"] + [f"  caste{i}: {MODELS[i % 3]}" for i in range(castes - 3)]
        lines += ["  builder: kimi-k2.5", "  scout: glm-5", "  watcher: minimax-2.5"]
        lines += ["proxy:", f"  endpoint: {endpoint}", f"  auth_token: {TOKEN}", extra]
        path.write_text("\n".join(lines) + "\n")
        return path

    def aether(self, profile: Path) -> StdioServerParameters:
        args = ["-m", "aether_mcp", "serve", "--profiles", str(profile), "--log-level", "WARNING"]
        return StdioServerParameters(command=sys.executable, args=args, cwd=str(self.folder), env=self.env)

    def hello(self) -> StdioServerParameters:
        return StdioServerParameters(command=sys.executable, args=[str(HELLO)], cwd=str(self.folder), env=self.env)

    # --- figures -----------------------------------------------------------------

    async def cold_start(self, profile: Path) -> None:
        async def start(params: StdioServerParameters) -> float:
            began = time.perf_counter()
            async with Client(params) as client:
                await client.list_tools()
                took = time.perf_counter() - began
            return took

        ours, base = await interleaved(lambda: start(self.aether(profile)), lambda: start(self.hello()), self.n(20))
        ratio = median(ours) / median(base)
        self.rows.append(
            Row(
                "cold start: spawn to a finished tools/list (stdio)",
                spread(base),
                spread(ours),
                ratio,
                "<= 1.10x",
                ratio <= 1.10,
            )
        )

    async def round_trips(self, profile: Path) -> None:
        async with Client(self.aether(profile)) as ours, Client(self.hello()) as base:

            async def get() -> float:
                began = time.perf_counter()
                await ours.call_tool("get_caste_model", {"caste": "scout"})
                return time.perf_counter() - began

            async def noop() -> float:
                began = time.perf_counter()
                await base.call_tool("noop", {})
                return time.perf_counter() - began

            counter = iter(range(10**6))

            async def set_() -> float:
                began = time.perf_counter()
                await ours.call_tool("set_caste_model", {"caste": "watcher", "model": MODELS[next(counter) % 3]})
                return time.perf_counter() - began

            async def wire(client: Client, name: str, arguments: dict[str, Any]) -> float:
                """tools/call straight over the session: no client-side output-schema validation."""
                request = types.CallToolRequest(params=types.CallToolRequestParams(name=name, arguments=arguments))
                began = time.perf_counter()
                await client.session.send_request(request, types.CallToolResult)
                return time.perf_counter() - began

            await interleaved(get, noop, 20)  # warm-up
            gets, noops = await interleaved(get, noop, self.n(300, 20))
            wire_gets, wire_noops = await interleaved(
                lambda: wire(ours, "get_caste_model", {"caste": "scout"}),
                lambda: wire(base, "noop", {}),
                self.n(300, 20),
            )
            sets, gets2 = await interleaved(set_, get, self.n(100, 10))
        ratio = median(gets) / median(noops)
        ratio99 = p99(gets) / p99(noops)
        self.rows.append(
            Row(
                "get_caste_model round trip, p50 (p99)",
                f"{spread(noops)}; p99 {p99(noops) * 1000:.1f} ms",
                f"{spread(gets)}; p99 {p99(gets) * 1000:.1f} ms",
                ratio,
                "p50 <= 1.25x",
                ratio <= 1.25,
                f"p99 ratio {ratio99:.2f}x",
            )
        )
        ratio = median(wire_gets) / median(wire_noops)
        self.rows.append(
            Row(
                "get_caste_model on the wire, p50 (without the client's output validation)",
                spread(wire_noops),
                spread(wire_gets),
                ratio,
                "(reference)",
                None,
            )
        )
        ratio = median(sets) / median(gets2)
        self.rows.append(
            Row(
                "set_caste_model round trip (lock, write, fsync)", spread(gets2), spread(sets), ratio, "< 5x", ratio < 5
            )
        )

    async def caste_scaling(self, endpoint: str) -> None:
        results = {}
        for size in (10, 100, 1000):
            async with Client(self.aether(self.profile(endpoint, castes=size))) as client:

                async def get(client: Any = client) -> float:
                    began = time.perf_counter()
                    await client.call_tool("get_caste_model", {"caste": "watcher"})
                    return time.perf_counter() - began

                for _ in range(10):
                    await get()
                results[size] = [await get() for _ in range(self.n(100, 10))]
        for size in (100, 1000):
            ratio = median(results[size]) / median(results[10])
            self.rows.append(
                Row(
                    f"get_caste_model with {size:,} castes",
                    f"10 castes: {spread(results[10])}",
                    spread(results[size]),
                    ratio,
                    "grows far slower than the profile",
                    ratio < size / 10 / 4,
                )
            )

    async def agent_lookups(self, endpoint: str) -> None:
        """A look-up in a project with Aether's 27 agent files (every one is stat'ed on each look-up) against the
        same profile in a folder with none."""
        profile = self.profile(endpoint)
        project = self.folder / "colony-27"
        folder = project / ".claude" / "agents" / "ant"
        folder.mkdir(parents=True)
        for caste in AETHER_CASTES:
            (folder / f"aether-{caste}.md").write_text(
                f"---\nname: aether-{caste}\ndescription: the {caste}\ntools: Read, Grep, Glob\nmodel: sonnet\n---\n"
                + "A line of the role prompt.\n" * 400
            )
        empty = self.folder / "no-agents"
        empty.mkdir()
        with_agents, without = self.aether(profile), self.aether(profile)
        with_agents.cwd, without.cwd = str(project), str(empty)
        async with Client(with_agents) as ours, Client(without) as base:

            def get(client: Client) -> Callable[[], Awaitable[float]]:
                async def once() -> float:
                    began = time.perf_counter()
                    await client.call_tool("get_caste_model", {"caste": "watcher"})
                    return time.perf_counter() - began

                return once

            await interleaved(get(ours), get(base), 20)
            measured, baseline = await interleaved(get(ours), get(base), self.n(300, 10))
        ratio = median(measured) / median(baseline)
        self.rows.append(
            Row(
                "get_caste_model with 27 agent files in the project",
                f"no agent files: {spread(baseline)}",
                spread(measured),
                ratio,
                "<= 1.25x",
                ratio <= 1.25,
            )
        )

    def direct_command(self, profile_path: Path, caste: str) -> tuple[list[str], dict[str, str]]:
        """The command and environment spawn_worker builds, for running the CLI directly."""
        profile = parse_profile(profile_path.read_text(), profile_path, {})
        catalog = CasteCatalog(profile, AgentScan(), {})
        spec = build_spec(catalog, SpawnRequest(caste=caste, task="say hi"), server_dir=self.folder, environ=os.environ)
        write_worker_files(spec)  # the MCP config the command line points to
        # Straight to the backend: its own address and token stand where the gateway's and a key would.
        direct = spec.placed(gateway_url=spec.settings.endpoint)
        return build_command(direct), build_env(direct, self.env, key=TOKEN)

    async def run_direct(self, command: list[str], env: dict[str, str]) -> float:
        began = time.perf_counter()
        await anyio.run_process(command, input=b"say hi", env=env, cwd=self.folder, check=True)
        return time.perf_counter() - began

    async def spawns(self, endpoint: str) -> None:
        profile = self.profile(endpoint)
        command, env = self.direct_command(profile, "builder")
        async with Client(self.aether(profile)) as client:

            async def spawn() -> float:
                began = time.perf_counter()
                result = await client.call_tool("spawn_worker", {"caste": "builder", "task": "say hi"})
                assert result.structured_content and result.structured_content["routing_verified"], result
                return time.perf_counter() - began

            await interleaved(spawn, lambda: self.run_direct(command, env), 2)
            ours, base = await interleaved(spawn, lambda: self.run_direct(command, env), self.n(12, 2))
        ratio = median(ours) / median(base)
        self.rows.append(
            Row(
                "spawn_worker(wait=True), one-turn worker (through the gateway)",
                f"direct CLI: {spread(base)}",
                spread(ours),
                ratio,
                "<= 1.05x",
                ratio <= 1.05,
            )
        )

    async def warm_spawns(self, endpoint: str) -> None:
        """A warm spawn against a cold direct run; and the floor: the same warm CLI driven with no server at all."""
        profile = self.profile(endpoint, extra="workers: {warm_workers: {builder: 1}}")
        command, env = self.direct_command(profile, "builder")
        settle = 3.0  # a warm CLI keeps initialising for a few seconds after it starts (see docs/benchmarks.md)

        async def warm_direct() -> float:
            process = await anyio.open_process([*command, "--input-format", "stream-json"], env=env, cwd=self.folder)
            await anyio.sleep(settle)
            began = time.perf_counter()
            assert process.stdin is not None and process.stdout is not None
            await process.stdin.send(user_message("say hi").encode())
            await process.stdin.aclose()
            seen = b""
            async for chunk in process.stdout:
                seen += chunk
                if b'"type":"result"' in seen:
                    break
            took = time.perf_counter() - began
            await process.wait()
            return took

        async with Client(self.aether(profile)) as client:

            async def spawn() -> float:
                await anyio.sleep(settle)  # the pool refills after each take, as between a colony's spawns
                began = time.perf_counter()
                result = await client.call_tool("spawn_worker", {"caste": "builder", "task": "say hi"})
                took = time.perf_counter() - began
                assert result.structured_content and result.structured_content["warm"], "the worker was not warm"
                return took

            ours, base = await interleaved(spawn, lambda: self.run_direct(command, env), self.n(12, 2))
        floor, cold = await interleaved(warm_direct, lambda: self.run_direct(command, env), self.n(8, 2))
        ratio = median(ours) / median(base)
        self.rows.append(
            Row(
                "spawn_worker with a warm worker",
                f"direct CLI: {spread(base)}",
                spread(ours),
                ratio,
                "<= 0.35x",
                ratio <= 0.35,
            )
        )
        ratio = median(floor) / median(cold)
        self.rows.append(
            Row(
                "floor: the same warm CLI fed directly, no server",
                f"direct CLI: {spread(cold)}",
                spread(floor),
                ratio,
                "(reference)",
                None,
            )
        )

    async def colony(self, endpoint: str, backend: LocalBackend) -> None:
        profile = self.profile(endpoint, extra="workers: {max_concurrent_workers: 8}")
        command, env = self.direct_command(profile, "builder")

        async def eight_spawned(client: Any) -> float:
            began = time.perf_counter()
            ids = []
            for _ in range(8):
                result = await client.call_tool("spawn_worker", {"caste": "builder", "task": "say hi", "wait": False})
                ids.append(result.structured_content["worker_id"])
            for worker_id in ids:
                done = await client.call_tool("get_worker", {"worker_id": worker_id, "wait_s": 120})
                assert done.structured_content["status"] == "succeeded", done
            return time.perf_counter() - began

        async def eight_direct() -> float:
            began = time.perf_counter()
            async with anyio.create_task_group() as group:
                for _ in range(8):
                    group.start_soon(self.run_direct, command, env)
            return time.perf_counter() - began

        async with Client(self.aether(profile)) as client:
            ours, base = await interleaved(lambda: eight_spawned(client), eight_direct, self.n(6, 1))
        ratio = median(ours) / median(base)
        self.rows.append(
            Row(
                "8 background workers at once, wall time to all done (through the gateway)",
                f"8 direct CLI runs: {spread(base)}",
                spread(ours),
                ratio,
                "<= 1.05x",
                ratio <= 1.05,
            )
        )

    def agent_project(self, name: str, with_agent: bool) -> Path:
        """A project folder, with an Aether-sized builder agent (a 10 KB role prompt, six tools) or without."""
        project = self.folder / name
        folder = project / ".claude" / "agents" / "ant"
        folder.mkdir(parents=True)
        if with_agent:
            rules = "".join(
                f"{i}. Write the failing test first, then the least code that passes it.\n" for i in range(150)
            )
            (folder / "aether-builder.md").write_text(
                "---\nname: aether-builder\ndescription: Writes code test-first\n"
                f"tools: Read, Write, Edit, Bash, Grep, Glob\nmodel: sonnet\n---\nYou are the Builder ant.\n{rules}"
            )
            store = ProfileStore(cwd=project, environ={"HOME": str(self.home)}, trust=self.trust_store())
            for agent in store.untrusted_agents():
                store.trust(agent.path)
        return project

    def trust_store(self) -> TrustStore:
        return TrustStore(user_config_dir({"HOME": str(self.home)}))

    async def agent_requests(self, endpoint: str, backend: LocalBackend) -> None:
        """The bytes of a worker's first request: as an agent, against the CLI's own `--agent` run and against
        the generic worker a caste without an agent file gets."""
        profile = self.profile(endpoint)
        routed, plain = self.agent_project("routed", True), self.agent_project("plain", False)

        def first_request() -> int:
            asked = [r for r in backend.requests if r.model == "kimi-k2.5" and "count_tokens" not in r.path]
            backend.requests.clear()
            return asked[0].size

        async def spawned(project: Path) -> int:
            backend.requests.clear()
            params = self.aether(profile)
            params.cwd = str(project)
            async with Client(params) as client:
                result = await client.call_tool("spawn_worker", {"caste": "builder", "task": "say hi"})
                assert result.structured_content and result.structured_content["routing_verified"], result
            return first_request()

        async def direct() -> int:
            backend.requests.clear()
            cli = find_cli(parse_profile("{}", "none"), os.environ).path
            env = self.env | {"ANTHROPIC_BASE_URL": endpoint, "ANTHROPIC_AUTH_TOKEN": TOKEN}
            command = [cli, "-p", "--agent", "aether-builder", "--model", "kimi-k2.5"]
            await anyio.run_process(command, input=b"say hi", env=env, cwd=routed, check=True)
            return first_request()

        samples = self.n(3, 1)
        ours = [await spawned(routed) for _ in range(samples)]
        cli = [await direct() for _ in range(samples)]
        generic = [await spawned(plain) for _ in range(samples)]
        ratio = median(ours) / median(cli)
        self.rows.append(
            Row(
                "first request of an agent worker (bytes)",
                f"claude -p --agent, same agent and model: {median(cli):,.0f} B",
                f"{median(ours):,.0f} B",
                ratio,
                "<= 1.10x",
                ratio <= 1.10,
            )
        )
        ratio = median(ours) / median(generic)
        self.rows.append(
            Row(
                "first request of an agent worker (bytes)",
                f"generic worker, caste with no agent file: {median(generic):,.0f} B",
                f"{median(ours):,.0f} B",
                ratio,
                "smaller",
                ratio < 1,
            )
        )

    async def hook(self) -> None:
        """The PreToolUse hook denying a routed caste, as Claude Code runs it; the baseline is Python starting."""
        project = self.agent_project("hooked", True)
        event = json.dumps(
            {"tool_name": "Task", "cwd": str(project), "tool_input": {"subagent_type": "aether-builder", "prompt": "x"}}
        ).encode()
        command = [str(Path(sys.executable).parent / "aether-mcp"), "hook", "pre-tool-use"]

        async def run(argv: list[str], stdin: bytes) -> float:
            began = time.perf_counter()
            done = await anyio.run_process(argv, input=stdin, env=self.env, cwd=project, check=True)
            took = time.perf_counter() - began
            assert not stdin or b'"deny"' in done.stdout, done.stdout
            return took

        ours, base = await interleaved(
            lambda: run(command, event), lambda: run([sys.executable, "-c", "pass"], b""), self.n(30, 3)
        )
        self.rows.append(
            Row(
                "PreToolUse hook: a routed caste denied",
                f"python -c pass: {spread(base)}",
                spread(ours),
                median(ours) / median(base),
                "< 200 ms",
                median(ours) < 0.2,
            )
        )

    async def gateway(self) -> None:
        """A streamed Messages request of a worker's size (20 KB), straight to the backend and through the
        gateway, interleaved: the time to the first byte and to the whole answer."""
        message = {"role": "user", "content": "x" * 20_000}
        body = json.dumps({"model": "kimi-k2.5", "max_tokens": 50, "stream": True, "messages": [message]}).encode()

        async def once(client: Any, url: str, key: str, first_bytes: list[float]) -> float:
            began = time.perf_counter()
            headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
            first = None
            async with client.stream("POST", url + "/v1/messages", content=body, headers=headers) as response:
                async for _ in response.aiter_raw():
                    first = first if first is not None else time.perf_counter() - began
            first_bytes.append(first or 0.0)
            return time.perf_counter() - began

        for latency in (0.0, 0.05):
            firsts: tuple[list[float], list[float]] = ([], [])
            with LocalBackend(token=TOKEN, models=MODELS, delay_s=latency) as backend:
                router = KeyRouter()
                gateway = Gateway(router)
                async with anyio.create_task_group() as group, httpx2.AsyncClient(timeout=30) as client:
                    url = gateway.start(group)
                    key = router.issue(Lease("bench", "builder", backend.url, TOKEN, ("kimi-k2.5",))).value

                    def direct(c: Any = client, b: str = backend.url, f: list[float] = firsts[0]) -> Awaitable[float]:
                        return once(c, b, TOKEN, f)

                    def through(
                        c: Any = client, g: str = url, k: str = key, f: list[float] = firsts[1]
                    ) -> Awaitable[float]:
                        return once(c, g, k, f)

                    await interleaved(through, direct, 10)
                    firsts[0].clear()
                    firsts[1].clear()
                    ours, base = await interleaved(through, direct, self.n(200 if latency == 0 else 40, 4))
                    await gateway.close()
                    group.cancel_scope.cancel()
            if latency == 0:
                added = median(ours) - median(base)
                self.rows.append(
                    Row(
                        "gateway's own latency per request, p50 (a backend answering at once)",
                        f"backend directly: {spread(base)}",
                        f"{spread(ours)}; added {added * 1000:.2f} ms",
                        median(ours) / median(base),
                        "<= 1 ms added",
                        added <= 0.001,
                    )
                )
            else:
                ratio = median(firsts[1]) / median(firsts[0])
                self.rows.append(
                    Row(
                        "time to first byte of a streamed answer, p50 (a model taking 50 ms)",
                        f"backend directly: {spread(firsts[0])}",
                        spread(firsts[1]),
                        ratio,
                        "<= 1.05x",
                        ratio <= 1.05,
                    )
                )

    async def memory(self, endpoint: str, backend: LocalBackend) -> None:
        profile = self.profile(endpoint, extra="workers: {max_concurrent_workers: 8}")
        samples: dict[str, list[float]] = {"hello": [], "idle": [], "busy": []}
        for _ in range(self.n(3, 1)):
            async with Client(self.hello()) as client:
                await client.list_tools()
                samples["hello"].append(rss_of_child("hello_server.py"))
            async with Client(self.aether(profile)) as client:
                await client.list_tools()
                await client.call_tool("get_caste_model", {})
                samples["idle"].append(rss_of_child("aether_mcp"))
                backend.delay_s = 2.0
                ids = []
                for _ in range(8):
                    result = await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi", "wait": False})
                    ids.append(result.structured_content["worker_id"])
                await anyio.sleep(1.0)
                samples["busy"].append(rss_of_child("aether_mcp"))
                for worker_id in ids:
                    await client.call_tool("get_worker", {"worker_id": worker_id, "wait_s": 60})
                backend.delay_s = 0.0
        base = median(samples["hello"])
        for key, label in (("idle", "server RSS, idle"), ("busy", "server RSS, 8 running workers through the gateway")):
            ratio = median(samples[key]) / base
            self.rows.append(
                Row(
                    label,
                    f"hello server idle: {base:.1f} MiB",
                    f"{median(samples[key]):.1f} MiB",
                    ratio,
                    "<= 1.3x",
                    ratio <= 1.3,
                )
            )


def rss_of_child(marker: str) -> float:
    """VmRSS in MiB of our child process whose command line mentions `marker`."""
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if ppid == me and marker in cmdline:
            kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            return kib / 1024
    raise RuntimeError(f"no child process running {marker}")


async def run_all(quick: bool, only: list[str] | None) -> tuple[list[Row], float]:
    began = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="aether-bench-") as name,
        LocalBackend(token=TOKEN, models=MODELS) as backend,
    ):
        bench = Bench(quick, Path(name))
        profile = bench.profile(backend.url)
        steps: dict[str, Callable[[], Awaitable[None]]] = {
            "cold_start": lambda: bench.cold_start(profile),
            "round_trips": lambda: bench.round_trips(profile),
            "caste_scaling": lambda: bench.caste_scaling(backend.url),
            "agent_lookups": lambda: bench.agent_lookups(backend.url),
            "spawn": lambda: bench.spawns(backend.url),
            "warm_spawn": lambda: bench.warm_spawns(backend.url),
            "colony": lambda: bench.colony(backend.url, backend),
            "memory": lambda: bench.memory(backend.url, backend),
            "agent_requests": lambda: bench.agent_requests(backend.url, backend),
            "hook": bench.hook,
            "gateway": bench.gateway,
        }
        for step, call in steps.items():
            if only and step not in only:
                continue
            print(f"... {step}", file=sys.stderr, flush=True)
            await call()
    return bench.rows, time.perf_counter() - began


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    memory = (
        int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
        / 1024**2
    )
    cli = find_cli(parse_profile("{}", "none"), os.environ)
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, mcp {version('mcp')}, Claude Code {cli.version()}"
    )


def markdown(rows: list[Row], took: float, command: str) -> str:
    lines = [
        "| figure | baseline (same run) | aether-mcp | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        met = {True: "yes", False: "**no**", None: "-"}[row.met]
        note = f" ({row.note})" if row.note else ""
        lines.append(f"| {row.figure} | {row.baseline} | {row.measured}{note} | {ratio} | {row.target} | {met} |")
    return "\n".join(lines) + f"\n\nCommand: `{command}` ({took:.0f} s)  \nMachine: {machine()}\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test whose figures mean nothing")
    parser.add_argument("--output", type=Path, help="write the results table to this Markdown file")
    parser.add_argument(
        "--only",
        action="append",
        help="run only this figure (repeatable): cold_start, round_trips, "
        "caste_scaling, agent_lookups, spawn, warm_spawn, colony, memory, agent_requests, hook, gateway",
    )
    args = parser.parse_args()
    rows, took = anyio.run(run_all, args.quick, args.only)
    table = markdown(rows, took, "python -m bench" + (" --quick" if args.quick else ""))
    print(table)
    if args.output:
        write_results(args.output, table)
    return 0


BEGIN, END = "<!-- results -->", "<!-- /results -->"


def write_results(path: Path, table: str) -> None:
    """Put the table between the file's results markers, keeping the prose around it; else write the table alone."""
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text.split(BEGIN, 1)[1]:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        path.write_text(f"{before}{BEGIN}\n{table}{END}{after}")
    else:
        path.write_text(table)
