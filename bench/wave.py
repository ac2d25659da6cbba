"""A wave of builders, as Aether's build playbook issues it: native sub-agents against routed workers.

    python -m bench.wave             # waves of 4 and 8 builders, native and routed, interleaved, twice
    python -m bench.wave --quick     # one wave of 2 builders whose model takes 2 s: a smoke test

The parent is the real Claude Code CLI, its model played by the local backend:
one assistant message with one `Agent` call per builder (`aether-builder`,
each with its own description and an Aether-sized prompt), then exactly the
calls its tool results name (`mcp__aether__get_worker {"worker_id": ...}`),
then a final answer that carries every result. Where the results name no call
but turn the Agent calls away (today's hook), the parent does what that advice
says: each prompt again, unchanged, as `mcp__aether__spawn_worker`. The
builder's model answers after 8 s, the parent's at once; the workers are real
Claude Code processes.

Native is the project with the builder agent's `model:` set to the builder's
model and no aether-mcp; routed is the same project after `aether-mcp install
--trust`. The hook and the server run this checkout's code (PYTHONPATH). Every
figure is against the native wave of the same size in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aether_mcp.profile.parsing import parse_profile
from aether_mcp.testing.backend import Call, LocalBackend, Recorded, Turn
from aether_mcp.workers.claude_cli import CLI_ENV_VAR, find_cli

from .run import Row, markdown

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "sk-bench-wave"  # noqa: S105 (the local backend's throwaway)
PARENT_MODEL = "parent-model"
BUILDER_MODEL = "kimi-k2.5"
BUILDER_MARK = "BUILDER-RULES"  # a line of the builder agent's prompt: a request carrying it ran as the builder
SPAWN = "mcp__aether__spawn_worker"
MAX_PARENT_TURNS = 12


def builder_agent() -> str:
    """An Aether-sized builder agent file (a 10 KB role prompt, six tools) on the builder's model."""
    rules = "".join(f"{i}. {BUILDER_MARK}: write the failing test first, then the least code.\n" for i in range(150))
    return (
        "---\nname: aether-builder\ndescription: Writes code test-first\n"
        f"tools: Read, Write, Edit, Bash, Grep, Glob\nmodel: {BUILDER_MODEL}\n---\nYou are the Builder ant.\n{rules}"
    )


def task_tag(index: int) -> str:
    return f"task_id: 1.{index + 1}"


def aether_prompt(index: int, count: int) -> str:
    """A worker prompt in the shape Aether's build playbook writes (about 3 KB): the phase objective, the task's
    metadata and dependencies, success criteria, active signals, playbook instructions and findings so far."""
    others = ", ".join(f"1.{i + 1}" for i in range(count) if i != index) or "none"
    criteria = "".join(
        f"- Criterion {c}: the module's public function {c} is tested for its edge cases.\n" for c in "ABCDEF"
    )
    signals = "".join(
        f"- signal {s}: keep the change inside src/feature_{index + 1}/; do not reformat.\n" for s in range(6)
    )
    playbook = "".join(
        f"{step}. Read the files named in the task, write a failing test, make it pass, run the suite.\n"
        for step in range(1, 9)
    )
    findings = "".join(
        f"- Scout found: module m{f} has no tests and a bare except at line {f * 7}.\n" for f in range(14)
    )
    return (
        f"# Phase 1: Build the feature modules\n\nObjective: each module of the feature works and is tested.\n\n"
        f"## Task\n{task_tag(index)}\nname: Build feature module {index + 1}\ncaste: builder\n"
        f"files: src/feature_{index + 1}/__init__.py, tests/test_feature_{index + 1}.py\n"
        f"parallel with: {others}\ndepends on: phase 0 (scaffold)\n\n"
        f"## Success criteria\n{criteria}\n## Active signals\n{signals}\n## Playbook\n{playbook}\n"
        f"## Findings so far\n{findings}\n"
        "## Return\nA JSON object: name, caste, status, summary, files_created, files_modified, tests, blockers, "
        "duration.\n"
    )


def answer(index: int) -> str:
    return f"builder answer #{index + 1}"


PLAN = "PLAN.md"  # what a parent that plans first reads before it issues the wave


def parent_script(
    count: int, routed: bool, background: bool | None, plan_s: float = 0.0, plan: str = PLAN
) -> list[Turn]:
    """The parent's turns: the wave in one message, then the calls its tool results name. A routed parent whose
    results name none and send it to spawn_worker passes each prompt again, unchanged, as today's advice says."""
    extra = {} if background is None else {"run_in_background": background}
    agents = tuple(
        Call(
            "Agent",
            {"description": f"Build feature module {i + 1}", "prompt": aether_prompt(i, count)}
            | {"subagent_type": "aether-builder"}
            | extra,
        )
        for i in range(count)
    )
    advised = Turn(
        calls=tuple(Call(SPAWN, {"caste": "builder", "task": aether_prompt(i, count)}) for i in range(count))
    )
    wave = [Turn(calls=agents), Turn(follow=True, otherwise=advised if routed else None)]
    # As Aether's build does before its waves: it reads the plan (here: a model that thinks plan_s over it).
    planning = [Turn(tool="Read", tool_input={"file_path": plan}, think_s=plan_s)] if plan_s else []
    return planning + wave


Event = tuple[float, dict[str, Any]]  # a stream-json event and when it arrived, on the backend's clock


@dataclass
class Session:
    """One run of the parent CLI."""

    exit_code: int
    wall_s: float  # start to exit
    events: list[Event]
    stderr: str


@dataclass
class Worker:
    key: str  # x-claude-code-agent-id (a native sub-agent) or x-claude-code-session-id (a worker process)
    started: float
    model: str | None
    ran_builder: bool
    tasks: list[str]


@dataclass
class Wave:
    mode: str
    count: int
    exit_code: int
    wall_s: float  # the parent process, start to exit
    wave_s: float  # the parent's first request to its last: the wave without the CLI's own start
    parent_turns: int
    agent_bytes: int  # what the parent wrote in its Agent calls
    other_bytes: int  # what it wrote in every other tool call
    workers: list[Worker]
    final_text: str
    verified: int  # tool results that report a routed worker verified on the builder's model
    hooks: list[tuple[float, float]] = field(default_factory=list)  # (started, answered) of each hook run
    stderr: str = ""

    @property
    def start_spread(self) -> float:
        starts = [w.started for w in self.workers]
        return max(starts) - min(starts) if starts else float("nan")

    @property
    def answered(self) -> int:
        return sum(answer(i) in self.final_text for i in range(self.count))

    @property
    def on_builder(self) -> int:
        """Workers that asked for the builder's model, ran the builder's prompt and exactly one task of the wave."""
        return sum(w.model == BUILDER_MODEL and w.ran_builder and len(w.tasks) == 1 for w in self.workers)


class Bench:
    def __init__(self, folder: Path, delay_s: float, background: bool | None, plan_s: float = 0.0) -> None:
        self.plan_s = plan_s
        self.folder = folder
        self.delay_s = delay_s
        self.background = background
        self.cli = find_cli(parse_profile("{}", "none"), os.environ).path
        self.runs = 0

    def env(self, home: Path) -> dict[str, str]:
        """The parent's environment: this checkout's code for the hook and the server, `aether-mcp` on PATH."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TERM", "TMPDIR", "USER", "SHELL")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(ROOT)
        env["HOME"] = str(home)
        return env

    def project(self, endpoint: str, routed: bool, count: int) -> tuple[Path, Path]:
        """A fresh git project with the builder agent and a profile on the backend, with a warm worker for each
        builder of the wave (as a user who runs waves sets it); routed: installed, trusted."""
        self.runs += 1
        project, home = self.folder / f"project-{self.runs}", self.folder / f"home-{self.runs}"
        (project / ".claude" / "agents" / "ant").mkdir(parents=True)
        home.mkdir()
        (project / ".claude" / "agents" / "ant" / "aether-builder.md").write_text(builder_agent())
        (project / "model-profiles.yaml").write_text(
            f"worker_models:\n  builder: {BUILDER_MODEL}\nworkers:\n  max_concurrent_workers: 8\n"
            f"  warm_workers: {{builder: {count}}}\n"
            f"proxy:\n  endpoint: {endpoint}\n  auth_token: {TOKEN}\n"
        )
        (project / ".claude" / "settings.local.json").write_text('{"permissions": {"allow": []}}\n')
        subprocess.run(["git", "init", "-q"], cwd=project, check=True, timeout=30)
        if routed:
            command = [sys.executable, "-m", "aether_mcp", "install", "--trust"]
            done = subprocess.run(
                command, cwd=project, env=self.env(home), capture_output=True, text=True, timeout=60, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"aether-mcp install failed: {done.stderr}")
        trust = {"projects": {str(project): {"hasTrustDialogAccepted": True}}}
        (home / ".claude.json").write_text(json.dumps(trust))
        return project, home

    def wave(self, count: int, routed: bool) -> Wave:
        scripts = {BUILDER_MODEL: [Turn(text=answer(i)) for i in range(count)]}
        delays = {BUILDER_MODEL: self.delay_s}
        with LocalBackend(token=TOKEN, models=[BUILDER_MODEL], scripts=scripts, delays=delays) as backend:
            project, home = self.project(backend.url, routed, count)
            plan = project / PLAN
            plan.write_text("# Phase 1\nBuild the feature modules, one builder each, side by side.\n")
            turns = parent_script(count, routed, self.background, self.plan_s, str(plan))
            backend.scripts[PARENT_MODEL] = deque(turns)
            session = self.parent(backend, project, home, timeout_s=60 + count * (self.delay_s + 15))
            requests = [
                r for r in backend.requests if r.path.startswith("/v1/messages") and "count_tokens" not in r.path
            ]
        return measure("routed" if routed else "native", count, session, requests, plan=self.plan_s > 0)

    def parent(self, backend: LocalBackend, project: Path, home: Path, timeout_s: float) -> Session:
        """Run the parent session; each stream-json event with the backend's time it arrived."""
        env = self.env(home) | {
            CLI_ENV_VAR: self.cli,
            "ANTHROPIC_BASE_URL": backend.url,
            "ANTHROPIC_AUTH_TOKEN": TOKEN,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
        command = [self.cli, "-p", "--model", PARENT_MODEL, "--output-format", "stream-json", "--verbose"]
        command += ["--include-hook-events", "--max-turns", str(MAX_PARENT_TURNS), "--allowedTools", "mcp__aether"]
        with tempfile.TemporaryFile("w+") as errors:
            process = subprocess.Popen(  # its own group, killed whole on timeout with its MCP server
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True, env=env,
                cwd=project, start_new_session=True,
            )  # fmt: skip
            began = backend.clock()
            watchdog = threading.Timer(timeout_s, os.killpg, (process.pid, signal.SIGKILL))
            watchdog.start()
            try:
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write("Build phase 1.")
                process.stdin.close()
                events = [(backend.clock(), _event(line)) for line in process.stdout]
                code = process.wait()
            finally:
                watchdog.cancel()
            errors.seek(0)
            return Session(code, backend.clock() - began, events, errors.read()[-2000:])


def _event(line: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return {}
    return event if isinstance(event, dict) else {}


def measure(mode: str, count: int, session: Session, requests: list[Recorded], plan: bool = False) -> Wave:
    """The wave's figures; with `plan`, the wave starts with the parent's second request (its first read the
    plan)."""
    events = session.events
    parent = [r for r in requests if r.model == PARENT_MODEL and r.agent_id is None]
    written = parent[-1].written if parent else ()
    results = [event for _, event in events if event.get("type") == "result"]
    return Wave(
        mode=mode,
        count=count,
        exit_code=session.exit_code,
        wall_s=session.wall_s,
        wave_s=parent[-1].at - parent[1 if plan else 0].at if len(parent) > 1 else float("nan"),
        parent_turns=len(parent) - (1 if plan else 0),
        agent_bytes=sum(size for name, size in written if name == "Agent"),
        other_bytes=sum(size for name, size in written if name != "Agent"),
        workers=workers(requests, count),
        final_text=str(results[-1].get("result") or "") if results else "",
        verified=sum(_verified(text) for text in tool_results(events)),
        hooks=hook_runs(events),
        stderr=session.stderr,
    )


def workers(requests: list[Recorded], count: int) -> list[Worker]:
    """Each worker by its first request: a sub-agent by its agent id, a worker process by its session id."""
    first: dict[str, Recorded] = {}
    for r in requests:
        if r.model != PARENT_MODEL:
            first.setdefault(r.agent_id or r.session_id or f"?{id(r)}", r)
    return [
        Worker(key, r.at, r.model, BUILDER_MARK in r.system, [t for t in map(task_tag, range(count)) if _asked(r, t)])
        for key, r in first.items()
    ]


def _asked(request: Recorded, tag: str) -> bool:
    return any(f"{tag}\n" in said for said in request.conversation)


def tool_results(events: list[Event]) -> list[str]:
    found = []
    for _, event in events:
        if event.get("type") != "user":
            continue
        for block in event.get("message", {}).get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                found.append(content if isinstance(content, str) else "".join(p.get("text", "") for p in content or []))
    return found


def _verified(text: str) -> bool:
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        return False
    return (
        isinstance(result, dict)
        and result.get("status") == "succeeded"
        and result.get("model") == BUILDER_MODEL
        and result.get("routing_verified") is True
    )


def hook_runs(events: list[Event]) -> list[tuple[float, float]]:
    """(started, answered) of each PreToolUse hook run, as the stream reported them."""
    started = {e.get("hook_id"): t for t, e in events if e.get("subtype") == "hook_started"}
    answered = {e.get("hook_id"): t for t, e in events if e.get("subtype") == "hook_response"}
    return sorted((started[h], answered[h]) for h in started if h in answered)


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def rows_for(count: int, native: list[Wave], routed: list[Wave]) -> list[Row]:
    def fig(waves: list[Wave], attr: str) -> float:
        return med([float(getattr(w, attr)) for w in waves])

    n, r = fig(native, "wave_s"), fig(routed, "wave_s")
    runs = f"median of {len(routed)}"
    session_ratio = fig(routed, "wall_s") / fig(native, "wall_s")
    rows = [
        Row(
            f"wave of {count} builders: wall time, from the parent's request that issues it to its answer ({runs})",
            f"native: {n:.1f} s",
            f"{r:.1f} s",
            r / n,
            "<= 1.15x",
            r / n <= 1.15,
            f"the whole session, parent start to exit: {fig(native, 'wall_s'):.1f} s native, "
            f"{fig(routed, 'wall_s'):.1f} s routed, {session_ratio:.2f}x (routed, Claude Code waits for the "
            "aether-mcp server to start before its first request)",
        ),
        Row(
            f"wave of {count} builders: spread of the workers' starts",
            f"native: {fig(native, 'start_spread'):.2f} s",
            f"{fig(routed, 'start_spread'):.2f} s",
            None,
            "<= 1.5 s",
            fig(routed, "start_spread") <= 1.5,
        ),
        Row(
            f"wave of {count} builders: parent turns",
            f"native: {fig(native, 'parent_turns'):.0f}",
            f"{fig(routed, 'parent_turns'):.0f}",
            fig(routed, "parent_turns") / fig(native, "parent_turns"),
            "<= native + 1",
            fig(routed, "parent_turns") <= fig(native, "parent_turns") + 1,
        ),
        Row(
            f"wave of {count} builders: bytes the parent writes per caste beyond its Agent calls",
            f"native: {fig(native, 'other_bytes') / count:,.0f} B (its Agent calls: "
            f"{fig(native, 'agent_bytes') / count:,.0f} B)",
            f"{fig(routed, 'other_bytes') / count:,.0f} B",
            None,
            "<= 300 B",
            fig(routed, "other_bytes") / count <= 300,
        ),
    ]
    return [*rows, *check_rows(count, native, routed)]


def check_rows(count: int, native: list[Wave], routed: list[Wave]) -> list[Row]:
    """What must hold in every run, whatever the timing: each worker as the builder, every answer carried."""

    def worst(waves: list[Wave], attr: str) -> int:
        return min(int(getattr(w, attr)) for w in waves)

    ok_native = worst(native, "on_builder") == count and worst(native, "answered") == count
    on_builder = worst(routed, "on_builder")
    verified, answered = worst(routed, "verified"), worst(routed, "answered")
    return [
        Row(
            f"wave of {count} builders: workers on {BUILDER_MODEL} with the builder's prompt and one task each; "
            "answers in the parent's final text; verified",
            f"native: {worst(native, 'on_builder')}/{count}; {worst(native, 'answered')}/{count}; no proof",
            f"{on_builder}/{count}; {answered}/{count}; {verified}/{count}",
            None,
            "all, in every run",
            ok_native and on_builder == verified == answered == count,
        )
    ]


def hook_row(waves: list[Wave]) -> Row | None:
    runs = [w.hooks for w in waves if w.hooks]
    if not runs:
        return None
    spreads = [max(s for s, _ in h) - min(s for s, _ in h) for h in runs]
    took = [a - s for h in runs for s, a in h]
    return Row(
        "PreToolUse hooks of one message's Agent calls: start spread; each, start to answer (stream times)",
        "-",
        f"{med(spreads) * 1000:.0f} ms; {med(took) * 1000:.0f} ms (max {max(took) * 1000:.0f} ms)",
        None,
        "(reference)",
        None,
    )


def worker_table(wave: Wave) -> str:
    lines = [f"{wave.mode}, {wave.count} builders (exit {wave.exit_code}, {wave.wall_s:.1f} s):"]
    first = min((w.started for w in wave.workers), default=0.0)
    for w in sorted(wave.workers, key=lambda w: w.started):
        tasks = ", ".join(w.tasks) or "none"
        lines.append(
            f"  {w.key[:18]:18}  start +{w.started - first:5.2f} s  model {w.model}  "
            f"builder's prompt {'yes' if w.ran_builder else 'NO'}  {tasks}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.wave", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one wave of 2, a 2 s model, once: a smoke test")
    parser.add_argument("--count", type=int, action="append", choices=range(1, 17), metavar="N", help="builders")
    parser.add_argument("--runs", type=int, default=2, choices=range(1, 6), help="interleaved runs of each (2)")
    parser.add_argument("--delay", type=float, default=8.0, help="seconds the builder's model takes (8)")
    parser.add_argument(
        "--plan", type=float, default=0.0, metavar="S",
        help="the parent first reads its plan, its model taking S seconds, then issues the wave (default 0: the "
        "wave is its first act, as the session starts)",
    )  # fmt: skip
    parser.add_argument(
        "--background", choices=("unset", "false"), default="unset",
        help="the Agent calls' run_in_background: unset, as Aether writes them (Claude Code then runs native "
        "sub-agents in the background), or false (each call waits for its sub-agent)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    counts = [2] if args.quick else args.count or [4, 8]
    runs, delay = (1, 2.0) if args.quick else (args.runs, min(max(args.delay, 0.0), 60.0))
    background = None if args.background == "unset" else False
    began = time.perf_counter()
    rows, tables, ok = [], [], True
    with tempfile.TemporaryDirectory(prefix="aether-wave-") as folder:
        bench = Bench(Path(folder), delay, background, min(max(args.plan, 0.0), 30.0))
        for count in counts:
            native: list[Wave] = []
            routed: list[Wave] = []
            for i in range(runs):
                for routed_first in [False, True] if i % 2 == 0 else [True, False]:
                    print(
                        f"... {count} builders, {'routed' if routed_first else 'native'}", file=sys.stderr, flush=True
                    )
                    (routed if routed_first else native).append(bench.wave(count, routed_first))
            failed = [w for w in native + routed if w.exit_code != 0]
            for w in failed:
                print(f"Error: the {w.mode} parent exited {w.exit_code}: {w.stderr.strip()[-500:]}", file=sys.stderr)
            ok = ok and not failed
            rows += rows_for(count, native, routed)
            tables += [worker_table(native[-1]), worker_table(routed[-1])]
            hooks = hook_row(routed)
            rows += [hooks] if hooks else []
    command = " ".join(["python -m bench.wave", *(sys.argv[1:] if argv is None else argv)])
    print(markdown(rows, time.perf_counter() - began, command))
    print("\n\n".join(tables))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
