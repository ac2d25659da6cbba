"""Routing at the wire: a Claude Code session run through `aether-mcp run`, against the same session without it.

    python -m bench.wire             # waves of 4 and 8 builders (3 runs each), the start, memory, the gateway
    python -m bench.wire --quick     # a wave of 2 whose model takes 2 s, once; a few requests: a smoke test

The parent is the real Claude Code CLI (`claude -p`), its model played by the
local backend as in `bench.wave`: one assistant message with one `Agent` call
per builder as its first act (`aether-builder`, Aether-sized prompts), then a
final answer that carries every result. The builder agent's file says
`model: sonnet` (both sessions get ANTHROPIC_DEFAULT_SONNET_MODEL, so that
means `sonnet-model`); the profile says `worker_models: builder: kimi-k2.5`.

Native is plain `claude -p` with ANTHROPIC_BASE_URL at the backend, in the
project without aether-mcp (installed, its hook would turn the Agent calls
away to process mode): its builders run on what the agent says. Wrapped is
`python -m aether_mcp run -- claude -p ...` in the project after `aether-mcp
install --trust` (the server, the PreToolUse hook and the SubagentStart and
SubagentStop hooks), whose gateway sends each builder to kimi-k2.5. Every
figure is against the other in the same run, interleaved:

- the wave's wall time, as `bench.wave` defines it (the parent's request that
  issues it to its last request), and which model each builder's requests
  reached the backend on;
- the session's start: launching the process to the backend's first request;
- the peak resident memory of the whole process tree (VmRSS summed, sampled
  every 50 ms) during the largest wave, and `bench.wave`'s process mode
  (each builder a `claude -p` worker) beside it;
- the gateway alone: a sub-agent's streamed 20 KB Messages request straight
  to the backend and through a running session's gateway (`aether-mcp run --
  python -m bench.wire --client ...`), with a builder's agent id so that the
  model is rewritten, alternately; then against a model taking 50 ms.

The hooks and the server run this checkout's code (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aether_mcp.testing.backend import LocalBackend, Recorded, Turn
from aether_mcp.testing.backend import _events as sse_events
from aether_mcp.workers.claude_cli import CLI_ENV_VAR
from aether_mcp.workers.spawn_log import log_path, read_spawn_log

from . import wave
from .run import Row, markdown, spread
from .wave import BUILDER_MARK, BUILDER_MODEL, MAX_PARENT_TURNS, PARENT_MODEL, TOKEN, Session, Wave, med

AGENT_MODEL = "sonnet"  # the builder agent file's `model:` line
SONNET = "sonnet-model"  # what `sonnet` names in both sessions (ANTHROPIC_DEFAULT_SONNET_MODEL)
WRAPPER = (sys.executable, "-m", "aether_mcp", "run", "--")
SAMPLE_S = 0.05  # the memory sampler's period
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024
AGENT_ID = "a0bench0wire0builder"  # the client's sub-agent, told to the gateway as an aether-builder
CLIENT_TIMEOUT_S = 180.0
START_TIMEOUT_S = 60.0


# --- memory ---------------------------------------------------------------------------------------------------


def _kind(cmdline: list[str]) -> str:
    """What a process of the tree is, for the breakdown of a peak."""
    words = " ".join(cmdline)
    if "aether_mcp run" in words or "aether-mcp run" in words:
        return "aether-mcp run"
    if " hook " in f" {words} ":
        return "hooks"
    if "serve" in cmdline and "aether" in words:
        return "aether-mcp serve"
    if cmdline and Path(cmdline[0]).name == "claude":
        return "claude"
    return "other"


def tree_rss() -> dict[int, tuple[str, int]]:
    """Every descendant of this process: its kind and resident bytes (VmRSS, from statm)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                ppid = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found: dict[int, tuple[str, int]] = {}
    statms = {os.getpid(): _statm(os.getpid())}
    todo = [(pid, os.getpid()) for pid in children.get(os.getpid(), [])]
    while todo:
        pid, parent = todo.pop()
        todo += [(child, pid) for child in children.get(pid, [])]
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                cmdline = [w.decode(errors="replace") for w in cmd.read().split(b"\0") if w]
            statms[pid] = statm = _statm(pid)
        except (OSError, ValueError, IndexError):
            continue
        if statm == statms.get(parent) or statm.split()[1] == b"0":
            # Between posix_spawn's clone(CLONE_VM) and its exec, a child shares its parent's memory (Claude Code
            # starting a hook, say): counted once. No pages at all: a zombie, not yet reaped.
            continue
        found[pid] = (_kind(cmdline), int(statm.split()[1]) * PAGE)
    return found


def _statm(pid: int) -> bytes:
    with open(f"/proc/{pid}/statm", "rb") as statm:
        return statm.read()


@dataclass
class Memory:
    """The tree's resident memory, sampled every SAMPLE_S: (time.monotonic(), total, by kind)."""

    samples: list[tuple[float, int, dict[str, tuple[int, int]]]] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max((total for _, total, _ in self.samples), default=0)

    def at_peak(self) -> dict[str, tuple[int, int]]:
        """Each kind's (processes, bytes) in the peak sample."""
        return max(self.samples, key=lambda s: s[1])[2] if self.samples else {}

    def between(self, start: float, end: float) -> float:
        """The median total of the samples taken from `start` to `end` (monotonic time); nan if none."""
        totals = [total for at, total, _ in self.samples if start <= at <= end]
        return med(totals) if totals else float("nan")

    def breakdown(self) -> str:
        parts = sorted(self.at_peak().items(), key=lambda kv: -kv[1][1])
        return ", ".join(f"{kind} {n}x {size / MIB:.0f}" for kind, (n, size) in parts)


@contextmanager
def sampled() -> Iterator[Memory]:
    """Sample this process's descendants (not itself: it is the bench and the backend) while the body runs."""
    memory = Memory()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            tree = tree_rss()
            kinds: dict[str, tuple[int, int]] = {}
            for kind, size in tree.values():
                n, total = kinds.get(kind, (0, 0))
                kinds[kind] = (n + 1, total + size)
            memory.samples.append((time.monotonic(), sum(size for _, size in tree.values()), kinds))
            stop.wait(SAMPLE_S)

    thread = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    thread.start()
    try:
        yield memory
    finally:
        stop.set()
        thread.join(5)


# --- sessions -------------------------------------------------------------------------------------------------


@dataclass
class Launch:
    """One session: the parent's run, and when it was launched and first reached the backend (backend clock)."""

    session: Session
    launched: float
    first_request: float

    @property
    def start_s(self) -> float:
        return self.first_request - self.launched


@dataclass
class WireWave:
    mode: str  # native or wrapped
    wave: Wave
    start_s: float
    memory: Memory
    by_agent: dict[str, list[Recorded]]  # each sub-agent's Messages requests
    expected: str  # the model every builder request must reach the backend on
    verified: int  # wire records in the spawn log: a builder on its caste's model, verified (wrapped only)
    answered: int  # builders whose answer is in one of the parent's replies (a reply for each group of notices)
    hooks: dict[str, list[float]]  # hook event -> each run's start to answer (stream times)
    issue_s: float  # the parent's wave request to the last builder's first request
    collect_s: float  # the last builder's answer to the parent's last request
    steady: float  # the tree's resident bytes while every builder runs (the hooks done): the median sample

    @property
    def on_model(self) -> int:
        """Builders whose every request reached the backend on `expected`, with the builder's prompt, one task."""
        tasks = {w.key: w for w in self.wave.workers}
        return sum(
            all(r.model == self.expected for r in requests)
            and all(BUILDER_MARK in r.system for r in requests)
            and key in tasks
            and len(tasks[key].tasks) == 1
            for key, requests in self.by_agent.items()
        )


class Bench(wave.Bench):
    """bench.wave's environment and CLI; projects and sessions with or without `aether-mcp run`."""

    def wire_project(self, endpoint: str, installed: bool, trust: bool = False) -> tuple[Path, Path]:
        """A fresh git project with the builder agent (`model: sonnet`) and a profile that sends the builder caste
        to kimi-k2.5 through the backend; installed: `aether-mcp install --trust`; trust: `aether-mcp trust` alone."""
        self.runs += 1
        project, home = self.folder / f"wire-{self.runs}", self.folder / f"wire-home-{self.runs}"
        agents = project / ".claude" / "agents" / "ant"
        agents.mkdir(parents=True)
        home.mkdir()
        agent = wave.builder_agent().replace(f"\nmodel: {BUILDER_MODEL}\n", f"\nmodel: {AGENT_MODEL}\n")
        assert f"model: {AGENT_MODEL}\n" in agent
        (agents / "aether-builder.md").write_text(agent)
        (project / "model-profiles.yaml").write_text(
            f"worker_models:\n  builder: {BUILDER_MODEL}\nproxy:\n  endpoint: {endpoint}\n  auth_token: {TOKEN}\n"
        )
        subprocess.run(["git", "init", "-q"], cwd=project, check=True, timeout=30)
        if installed or trust:
            command = [sys.executable, "-m", "aether_mcp", *(["install", "--trust"] if installed else ["trust"])]
            done = subprocess.run(
                command, cwd=project, env=self.env(home), capture_output=True, text=True, timeout=60, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"aether-mcp {command[3]} failed: {done.stderr}")
        if not installed:
            (project / ".claude" / "settings.local.json").write_text('{"permissions": {"allow": []}}\n')
        (home / ".claude.json").write_text(json.dumps({"projects": {str(project): {"hasTrustDialogAccepted": True}}}))
        return project, home

    def session_env(self, home: Path, endpoint: str) -> dict[str, str]:
        return self.env(home) | {
            CLI_ENV_VAR: self.cli,
            "ANTHROPIC_BASE_URL": endpoint,
            "ANTHROPIC_AUTH_TOKEN": TOKEN,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": SONNET,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }

    def launch(
        self, backend: LocalBackend, project: Path, home: Path, *, wrapped: bool, prompt: str, timeout_s: float
    ) -> Launch:
        """Run the parent, plain or wrapped; each stream-json event with the backend's time it arrived."""
        command = [*(WRAPPER if wrapped else ()), self.cli, "-p", "--model", PARENT_MODEL]
        command += ["--output-format", "stream-json", "--verbose", "--include-hook-events"]
        command += ["--max-turns", str(MAX_PARENT_TURNS), "--allowedTools", "Agent"]
        seen = len(backend.requests)
        with tempfile.TemporaryFile("w+") as errors:
            began = backend.clock()
            process = subprocess.Popen(  # its own group, killed whole on timeout
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True,
                env=self.session_env(home, backend.url), cwd=project, start_new_session=True,
            )  # fmt: skip
            watchdog = threading.Timer(timeout_s, os.killpg, (process.pid, signal.SIGKILL))
            watchdog.start()
            try:
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(prompt)
                process.stdin.close()
                events = [(backend.clock(), wave._event(line)) for line in process.stdout]
                code = process.wait()
            finally:
                watchdog.cancel()
            errors.seek(0)
            session = Session(code, backend.clock() - began, events, errors.read()[-2000:])
        fresh = backend.requests[seen:]
        return Launch(session, began, fresh[0].at if fresh else float("nan"))

    def wire_wave(self, count: int, wrapped: bool) -> WireWave:
        answers = [Turn(text=wave.answer(i)) for i in range(count)]
        scripts = {BUILDER_MODEL: list(answers), SONNET: list(answers)}
        delays = {PARENT_MODEL: 0.0}
        with LocalBackend(token=TOKEN, scripts=scripts, delay_s=self.delay_s, delays=delays) as backend:
            project, home = self.wire_project(backend.url, installed=wrapped)
            backend.scripts[PARENT_MODEL] = deque(wave.parent_script(count, routed=False, background=None))
            with sampled() as memory:
                launch = self.launch(
                    backend,
                    project,
                    home,
                    wrapped=wrapped,
                    prompt="Build phase 1.",
                    timeout_s=60 + count * (self.delay_s + 15),
                )
            requests = messages(backend.requests)
        mode = "wrapped" if wrapped else "native"
        measured = wave.measure(mode, count, launch.session, requests)
        by_agent: dict[str, list[Recorded]] = {}
        for r in requests:
            if r.agent_id is not None:
                by_agent.setdefault(r.agent_id, []).append(r)
        parent = [r for r in requests if r.agent_id is None and r.model == PARENT_MODEL]
        firsts = [rs[0].at for rs in by_agent.values()]
        lasts = [rs[-1].at + self.delay_s for rs in by_agent.values()]  # each builder's answer: its delay after
        return WireWave(
            mode=mode,
            wave=measured,
            start_s=launch.start_s,
            memory=memory,
            by_agent=by_agent,
            expected=BUILDER_MODEL if wrapped else SONNET,
            verified=verified_builders(project) if wrapped else 0,
            answered=answered(count, launch.session.events),
            hooks=hook_times(launch.session.events),
            issue_s=max(firsts) - parent[0].at if firsts and parent else float("nan"),
            collect_s=parent[-1].at - max(lasts) if lasts and parent else float("nan"),
            # the backend's clock is time.monotonic() less its start
            steady=memory.between(backend.started + max(firsts) + 0.5, backend.started + min(lasts) - 0.5)
            if firsts
            else float("nan"),
        )

    def process_wave(self, count: int) -> tuple[Wave, Memory]:
        """bench.wave's routed mode (each builder a `claude -p` worker, a warm one each), its tree sampled."""
        with sampled() as memory:
            routed = self.wave(count, routed=True)
        return routed, memory

    def starts(self, runs: int, warm: bool) -> list[Row]:
        """Launch to the backend's first request, of a session that answers at once: plain in a project without
        aether-mcp; wrapped in a project not installed (its profile trusted): the wrapper alone; plain in the
        installed project: the MCP server Claude Code waits for; and wrapped in it. Interleaved, the order rotating."""
        with LocalBackend(token=TOKEN) as backend:
            plain = self.wire_project(backend.url, installed=False)
            trusted = self.wire_project(backend.url, installed=False, trust=True)
            installed = self.wire_project(backend.url, installed=True)
            variants = {
                "plain": (plain, False),
                "run only": (trusted, True),
                "installed": (installed, False),
                "wrapped": (installed, True),
            }
            took: dict[str, list[float]] = {name: [] for name in variants}
            order = list(variants)
            for i in range(runs + (1 if warm else 0)):
                for name in order[i % len(order) :] + order[: i % len(order)]:
                    (project, home), wrapped = variants[name]
                    launch = self.launch(
                        backend, project, home, wrapped=wrapped, prompt="hi", timeout_s=START_TIMEOUT_S
                    )
                    if launch.session.exit_code != 0:
                        raise RuntimeError(f"the {name} session exited {launch.session.exit_code}")
                    if i > 0 or not warm:  # the first round warms the caches, and is not counted
                        took[name].append(launch.start_s)
        base, ours = med(took["plain"]), med(took["wrapped"])
        run_only, server = med(took["run only"]) - base, med(took["installed"]) - base
        added = ours - base
        return [
            Row(
                "session start: launch to the backend's first request, wrapped (installed, trusted) vs plain "
                "claude -p (no aether-mcp)",
                f"plain: {spread(took['plain'])}",
                f"{spread(took['wrapped'])}; added {added * 1000:.0f} ms",
                ours / base,
                "<= 0.15 s added",
                added <= 0.15,
            ),
            Row(
                "session start: the wrapper alone (wrapped, in a project not installed: no server, no hooks)",
                f"plain: {base * 1000:.0f} ms",
                f"{spread(took['run only'])}; added {run_only * 1000:.0f} ms",
                med(took["run only"]) / base,
                "<= 0.15 s added",
                run_only <= 0.15,
            ),
            Row(
                "session start: the MCP server alone (plain claude -p in the installed project: Claude Code waits "
                "for the server before its first request)",
                f"plain: {base * 1000:.0f} ms",
                f"{spread(took['installed'])}; added {server * 1000:.0f} ms",
                med(took["installed"]) / base,
                "(reference)",
                None,
            ),
        ]

    def gateway(self, requests: int, ttfb_requests: int) -> list[Row]:
        """A sub-agent's streamed Messages request, straight to the backend and through a running session's gateway
        (`aether-mcp run -- python -m bench.wire --client`), alternately: its whole time, with the backend closing
        each streamed answer's connection (as LocalBackend does) and keeping it (as a proxy on uvicorn does); and
        its first byte against a model taking 50 ms."""
        rows = []
        with LocalBackend(token=TOKEN) as backend:
            kept = KeptAlive(backend)
            project, home = self.wire_project(backend.url, installed=True)
            for phase, delay, n in (("closed", 0.0, requests), ("kept", 0.0, requests), ("ttfb", 0.05, ttfb_requests)):
                backend.delay_s, kept.on = delay, phase == "kept"
                seen = len(backend.requests)
                command = [*WRAPPER, sys.executable, "-m", "bench.wire", "--client", backend.url, "--requests", str(n)]
                done = subprocess.run(
                    command, cwd=project, env=self.session_env(home, backend.url), capture_output=True, text=True,
                    timeout=CLIENT_TIMEOUT_S, check=False,
                )  # fmt: skip
                if done.returncode != 0:
                    raise RuntimeError(f"the gateway client failed: {done.stderr[-2000:]}")
                timings = json.loads(done.stdout.strip().splitlines()[-1])
                direct, through = timings["direct"], timings["through"]
                sent = messages(backend.requests[seen:])
                rewritten = sum(r.model == BUILDER_MODEL and r.agent_id == AGENT_ID for r in sent)
                straight = sum(r.model == SONNET for r in sent)
                check = (
                    f"{rewritten} of {len(sent) - straight} through the gateway reached the backend on {BUILDER_MODEL}"
                )
                if rewritten != len(sent) - straight:
                    raise RuntimeError(f"the gateway's requests were not all rewritten: {check}")
                if phase != "ttfb":
                    totals = [t for t, _ in direct], [t for t, _ in through]
                    added = med(totals[1]) - med(totals[0])
                    how = (
                        "the backend closing each streamed answer's connection, so the gateway connects upstream "
                        "for every request"
                        if phase == "closed"
                        else "every connection kept alive (a backend that keeps them, as a proxy on uvicorn does)"
                    )
                    rows.append(
                        Row(
                            "gateway's added latency per request, p50: a sub-agent's streamed 20 KB Messages request, "
                            f"model rewritten by the session's router (a backend answering at once; {how})",
                            f"backend directly: {spread(totals[0])}",
                            f"{spread(totals[1])}; added {added * 1000:.2f} ms; {check}",
                            med(totals[1]) / med(totals[0]),
                            "<= 1 ms added",
                            added <= 0.001,
                        )
                    )
                else:
                    firsts = [f for _, f in direct], [f for _, f in through]
                    ratio = med(firsts[1]) / med(firsts[0])
                    rows.append(
                        Row(
                            "time to first byte of a sub-agent's streamed answer through the gateway, p50 (a model "
                            "taking 50 ms)",
                            f"backend directly: {spread(firsts[0])}",
                            f"{spread(firsts[1])}; added {(med(firsts[1]) - med(firsts[0])) * 1000:.2f} ms",
                            ratio,
                            "<= 1.02x",
                            ratio <= 1.02,
                        )
                    )
        return rows


class KeptAlive:
    """While `on`, the backend sends each streamed answer whole with its length and keeps the connection for the next
    request, as a proxy on uvicorn does (LocalBackend closes it after each streamed answer)."""

    def __init__(self, backend: LocalBackend) -> None:
        self.on = False
        handler: Any = backend._server.RequestHandlerClass  # made for this backend alone by LocalBackend
        closing = handler._stream
        switch = self

        def stream(self: Any, message: dict[str, Any]) -> None:
            if not switch.on:
                closing(self, message)
                return
            data = b"".join(f"event: {n}\ndata: {json.dumps(e)}\n\n".encode() for n, e in sse_events(message))
            # As uvicorn does: no Nagle, so an answer never waits for the client's delayed ACK (40 ms).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        handler._stream = stream


def messages(requests: list[Recorded]) -> list[Recorded]:
    return [r for r in requests if r.path.startswith("/v1/messages") and "count_tokens" not in r.path]


def verified_builders(project: Path) -> int:
    """Wire records in the spawn log of a builder sub-agent verified on the builder's model, asked for sonnet."""
    records = read_spawn_log(log_path(project / ".aether"), 100)
    return sum(
        r.get("mode") == "wire"
        and r.get("caste") == "builder"
        and r.get("routing_verified") is True
        and r.get("model") == BUILDER_MODEL
        and set(r.get("requests_by_asked_model") or {}) == {SONNET}
        for r in records
    )


def answered(count: int, events: list[wave.Event]) -> int:
    """Builders whose answer is in one of the parent's replies: with its sub-agents in the background, the parent
    answers each group of their notices as it comes."""
    replies = "\n".join(str(e.get("result") or "") for _, e in events if e.get("type") == "result")
    return sum(wave.answer(i) in replies for i in range(count))


def hook_times(events: list[wave.Event]) -> dict[str, list[float]]:
    """Each hook run's start to answer, by its event (PreToolUse, SubagentStart, SubagentStop), as streamed."""
    started = {e.get("hook_id"): (t, str(e.get("hook_event"))) for t, e in events if e.get("subtype") == "hook_started"}
    found: dict[str, list[float]] = {}
    for t, e in events:
        if e.get("subtype") == "hook_response" and e.get("hook_id") in started:
            began, name = started[e.get("hook_id")]
            found.setdefault(name, []).append(t - began)
    return found


# --- the gateway's client, run inside `aether-mcp run` ---------------------------------------------------------


def request_body() -> bytes:
    """A sub-agent's streamed Messages request of about 20 KB: the builder's system prompt and its task."""
    agent = wave.builder_agent()
    system = agent.split("---\n", 2)[2]
    task = wave.aether_prompt(0, 4)
    content = [{"type": "text", "text": task}]
    body = {"model": SONNET, "max_tokens": 1024, "stream": True, "system": [{"type": "text", "text": system}]}
    body["messages"] = [{"role": "user", "content": content}]
    pad = 20_000 - len(json.dumps(body)) - 40
    content.insert(0, {"type": "text", "text": "<context>\n" + "ctx line\n" * (pad // 9)})
    return json.dumps(body).encode()


def _post(connection: http.client.HTTPConnection, headers: dict[str, str], body: bytes) -> tuple[float, float]:
    """One streamed request: (its whole time, its time to the first bytes of the answer's body)."""
    began = time.perf_counter()
    connection.request("POST", "/v1/messages?beta=true", body, headers)
    response = connection.getresponse()
    chunk = response.read1(65536)
    first = time.perf_counter() - began
    while chunk:
        chunk = response.read1(65536)
    response.read()  # an answer with a length is done once it is read to its end: the connection is free again
    took = time.perf_counter() - began
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}")
    return took, first


def client(direct_url: str, n: int, warmup: int) -> dict[str, list[tuple[float, float]]]:
    """Tell the session's gateway of a builder sub-agent, then send its requests straight and through, alternately."""
    gateway_url, key = os.environ["ANTHROPIC_BASE_URL"], os.environ["ANTHROPIC_AUTH_TOKEN"]
    session = "bench-wire-session"

    def connect(url: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)

    gateway = connect(gateway_url)
    told = json.dumps({"session_id": session, "agent_id": AGENT_ID, "agent_type": "aether-builder"})
    gateway.request("POST", "/aether-mcp/subagent-start", told, {"authorization": f"Bearer {key}"})
    answer = gateway.getresponse()
    answer.read()
    if answer.status != 200:
        raise RuntimeError(f"the gateway did not take the sub-agent: HTTP {answer.status}")
    body = request_body()
    common = {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-claude-code-session-id": session,
    }
    common["x-claude-code-agent-id"] = AGENT_ID
    sides = {
        "direct": (connect(direct_url), common | {"authorization": f"Bearer {TOKEN}"}),
        "through": (gateway, common | {"authorization": f"Bearer {key}"}),
    }
    found: dict[str, list[tuple[float, float]]] = {"direct": [], "through": []}
    for i in range(warmup + n):
        for side in ("direct", "through") if i % 2 == 0 else ("through", "direct"):
            connection, headers = sides[side]
            took = _post(connection, headers, body)
            if i >= warmup:
                found[side].append(took)
    return found


# --- the report -----------------------------------------------------------------------------------------------


def wave_rows(count: int, native: list[WireWave], wrapped: list[WireWave]) -> list[Row]:
    def fig(waves: list[WireWave], value: str) -> float:
        return med([float(getattr(w, value)) for w in waves])

    def wfig(waves: list[WireWave], value: str) -> float:
        return med([float(getattr(w.wave, value)) for w in waves])

    n, r = wfig(native, "wave_s"), wfig(wrapped, "wave_s")
    ratio = r / n
    runs = f"median of {len(wrapped)}"
    rows = [
        Row(
            f"wave of {count} builders as the parent's first act: wall time, the parent's request that issues it to "
            f"its last ({runs})",
            f"native: {n:.2f} s",
            f"{r:.2f} s (runs: {', '.join(f'{w.wave.wave_s:.2f}' for w in wrapped)} s against "
            f"{', '.join(f'{w.wave.wave_s:.2f}' for w in native)} s; parent turns {wfig(wrapped, 'parent_turns'):.0f} "
            f"against {wfig(native, 'parent_turns'):.0f}; the whole session, launch to exit: "
            f"{wfig(wrapped, 'wall_s'):.1f} s against {wfig(native, 'wall_s'):.1f} s)",
            ratio,
            "<= 1.03x",
            ratio <= 1.03,
        ),
        Row(
            f"wave of {count} builders: where the time goes: the parent's wave request to the last builder's first "
            "request; the last builder's answer to the parent's last request",
            f"native: {fig(native, 'issue_s') * 1000:.0f} ms; {fig(native, 'collect_s') * 1000:.0f} ms",
            f"{fig(wrapped, 'issue_s') * 1000:.0f} ms; {fig(wrapped, 'collect_s') * 1000:.0f} ms",
            None,
            "(reference)",
            None,
        ),
    ]
    hooks: dict[str, list[float]] = {}
    for w in wrapped:
        for name, times in w.hooks.items():
            hooks.setdefault(name, []).extend(times)
    if hooks:
        rows.append(
            Row(
                f"wave of {count} builders, wrapped: each hook run, start to answer (stream times; median, max)",
                "native: none",
                "; ".join(
                    f"{name} {med(times) * 1000:.0f} ms, {max(times) * 1000:.0f} ms (n={len(times)})"
                    for name, times in sorted(hooks.items())
                ),
                None,
                "(reference)",
                None,
            )
        )
    on_native, on_wrapped = min(w.on_model for w in native), min(w.on_model for w in wrapped)
    answers = min(w.answered for w in native + wrapped)
    verified = min(w.verified for w in wrapped)
    rows.append(
        Row(
            f"wave of {count} builders: builders whose every request reached the backend on the expected model with "
            "the builder's prompt and one task; answers in the parent's replies (worst run); wire records verified",
            f"native, on {SONNET} (the agent's model: {AGENT_MODEL}): {on_native}/{count}",
            f"on {BUILDER_MODEL} (the profile's builder): {on_wrapped}/{count}; answers {answers}/{count}; "
            f"verified {verified}/{count}",
            None,
            "all, in every run",
            on_native == on_wrapped == answers == verified == count,
        )
    )
    return rows


def memory_rows(count: int, native: list[WireWave], wrapped: list[WireWave], process: Row) -> list[Row]:
    base = med([w.memory.peak for w in native]) / MIB
    ours = med([w.memory.peak for w in wrapped]) / MIB
    calm = med([w.steady for w in native]) / MIB, med([w.steady for w in wrapped]) / MIB
    return [
        Row(
            f"peak resident memory of the process tree (VmRSS summed, every {SAMPLE_S * 1000:.0f} ms) during the wave "
            f"of {count} builders",
            f"native: {base:.0f} MiB (a run's peak: {native[-1].memory.breakdown()} MiB)",
            f"{ours:.0f} MiB, +{ours - base:.0f} MiB (a run's peak: {wrapped[-1].memory.breakdown()} MiB; while "
            f"the builders run: {calm[1]:.0f} MiB against {calm[0]:.0f} MiB, +{calm[1] - calm[0]:.0f} MiB)",
            ours / base,
            "<= 60 MB added",
            (ours - base) * MIB <= 60e6,
        ),
        process,
    ]


def process_row(count: int, native: list[WireWave], routed: Wave, memory: Memory) -> Row:
    base = med([w.memory.peak for w in native]) / MIB
    ours = memory.peak / MIB
    return Row(
        f"peak resident memory during the wave of {count}, process mode (bench.wave's routed: each builder a "
        "claude -p worker, a warm one each; one run)",
        f"native: {base:.0f} MiB",
        f"{ours:.0f} MiB, +{ours - base:.0f} MiB (at its peak: {memory.breakdown()} MiB; its wave {routed.wave_s:.2f} "
        f"s, {routed.on_builder}/{count} on {BUILDER_MODEL}, exit {routed.exit_code})",
        ours / base,
        "(reference)",
        None,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.wire", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a wave of 2, a 2 s model, once; a few requests; no process mode"
    )
    parser.add_argument("--runs", type=int, default=3, choices=range(2, 6), help="interleaved runs of each wave (3)")
    parser.add_argument("--delay", type=float, default=8.0, help="seconds the builder's model takes (8)")
    parser.add_argument("--no-process-mode", action="store_true", help="leave out process mode's memory figure")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)  # the gateway's client, inside the wrapper
    parser.add_argument("--requests", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        n = min(max(args.requests, 1), 5000)
        print(json.dumps(client(args.client, n, warmup=min(20, n))))
        return 0
    counts = [2] if args.quick else [4, 8]
    runs, delay = (1, 2.0) if args.quick else (args.runs, min(max(args.delay, 0.0), 60.0))
    began = time.perf_counter()
    rows: list[Row] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="aether-wire-") as folder:
        bench = Bench(Path(folder), delay, background=None)
        last: tuple[list[WireWave], list[WireWave]] = ([], [])
        for count in counts:
            native: list[WireWave] = []
            wrapped: list[WireWave] = []
            for i in range(runs):
                for wrapped_first in (False, True) if i % 2 == 0 else (True, False):
                    print(f"... {count} builders, {'wrapped' if wrapped_first else 'native'}", file=sys.stderr)
                    (wrapped if wrapped_first else native).append(bench.wire_wave(count, wrapped_first))
            failed = [w for w in native + wrapped if w.wave.exit_code != 0]
            for w in failed:
                print(f"Error: the {w.mode} parent exited {w.wave.exit_code}: {w.wave.stderr[-500:]}", file=sys.stderr)
            found = wave_rows(count, native, wrapped)
            check = found[-1]  # every builder on its session's model, answered, verified: a failure, not a figure
            if not check.met:
                print(f"Error: {check.figure}: {check.baseline}; {check.measured}", file=sys.stderr)
            ok = ok and not failed and bool(check.met)
            rows += found
            last = (native, wrapped)
        if args.quick or args.no_process_mode:  # it starts a CLI and a warm one per builder: not in a smoke test
            why = "--quick" if args.quick else "--no-process-mode"
            process = Row("peak resident memory, process mode", "-", f"not run ({why})", None, "-", None)
        else:
            print(f"... {counts[-1]} builders, process mode", file=sys.stderr)
            routed, memory = bench.process_wave(counts[-1])
            process = process_row(counts[-1], last[0], routed, memory)
        rows += memory_rows(counts[-1], *last, process)
        print("... session starts", file=sys.stderr)
        rows += bench.starts(1 if args.quick else 6, warm=not args.quick)
        print("... the gateway", file=sys.stderr)
        rows += bench.gateway(*((10, 4) if args.quick else (500, 60)))
    command = " ".join(["python -m bench.wire", *(sys.argv[1:] if argv is None else argv)])
    print(markdown(rows, time.perf_counter() - began, command))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
