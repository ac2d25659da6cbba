"""Routing at the wire, as a person sees it: an interactive Claude Code session in a real terminal (tmux), started
with `aether-mcp claude`, whose wave of sub-agents runs on the caste's model while Claude Code shows it as usual."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import WIRE_CASTES, claude_processes, messages_of, wait_for, wire_project, wire_records

from aether_mcp.commands.demo import DEMO_TOKEN, PARENT_MODEL
from aether_mcp.profile.parsing import parse_profile
from aether_mcp.testing.backend import Call, LocalBackend, Turn
from aether_mcp.workers.claude_cli import CLI_ENV_VAR, find_cli

pytestmark = pytest.mark.anyio

CASTE_MODELS = WIRE_CASTES
BUILDERS = 4
BUILDER_DELAY_S = 4.0  # each builder's answer: long enough for the wave to be seen running
PROMPT = "Build the four pieces."
# What Claude Code shows when a hook fails, or when a call it made was refused.
NEVER_SHOWN = ("hook error", "Not run")
INPUT = "\N{HEAVY RIGHT-POINTING ANGLE QUOTATION MARK ORNAMENT}"  # the mark of Claude Code's input line


def session_env(home: Path, endpoint: str, cli: str) -> dict[str, str]:
    """What the terminal's shell would hold: the endpoint and its token, the CLI, and nothing of the caller's
    terminal (its size, a tmux of its own)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "USER", "SHELL", "TMPDIR", "LANG") or k[:3] == "LC_"}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # aether-mcp, as installed
            "HOME": str(home),
            "LANG": env.get("LANG") or "C.UTF-8",
            "ANTHROPIC_BASE_URL": endpoint,
            "ANTHROPIC_AUTH_TOKEN": DEMO_TOKEN,
            CLI_ENV_VAR: cli,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
    )
    return env


async def test_an_interactive_sessions_wave_shows_as_usual_and_runs_on_the_castes_model(tmp_path: Path) -> None:
    """tmux, 120x40, `aether-mcp claude --model parent-model`: a typed prompt makes the parent start 4
    aether-builder sub-agents in one message. While they run, Claude Code shows them as it always does (launched,
    a live row each, then finished), and never a hook error; /exit ends Claude Code and the wrapper with status 0
    and its summary. Each builder's requests reached the backend on the builder caste's model (not the agent file's
    `model: sonnet`) with Claude Code's agent id, the parent's on its own, and the spawn log proves each builder."""
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed: .ci/run installs it (apt-get install tmux)")
        pytest.skip(
            "drives Claude Code in a real terminal, which tmux provides: tmux is not installed (apt-get install tmux)"
        )
    project, home = tmp_path / "project", tmp_path / "home"
    calls = tuple(
        Call("Agent", {"description": f"aether-builder {n}", "prompt": f"piece {n}", "subagent_type": "aether-builder"})
        for n in range(1, BUILDERS + 1)
    )
    # The parent starts the wave, then answers each notice of a finished builder with a short note of its own.
    scripts = {PARENT_MODEL: [Turn(calls=calls), *(Turn(text=f"PARENT-NOTE {n}") for n in range(2 * BUILDERS))]}
    cli = find_cli(parse_profile("{}", "none"), os.environ).path
    session = f"aether-wire-{tmp_path.name}-{int(time.time())}"
    tmux = ["tmux", "-L", session, "-f", "/dev/null"]  # a server of its own, with no one's settings
    shown: list[str] = []  # every screen read, in order
    status_file = tmp_path / "status"

    with LocalBackend(token=DEMO_TOKEN, scripts=scripts, delays={CASTE_MODELS["builder"]: BUILDER_DELAY_S}) as backend:
        wire_project(project, home, backend.url, DEMO_TOKEN, first_run=True)
        env = session_env(home, backend.url, cli)
        claude = [sys.executable, "-m", "aether_mcp", "claude", "--model", PARENT_MODEL]
        # Claude Code's default mode (auto) asks a safety check of Anthropic's servers, which a local endpoint does
        # not have: the default permission mode, with the sub-agent tool allowed, asks nothing.
        claude += ["--permission-mode", "default", "--allowedTools", "Agent"]

        def run_tmux(*args: str) -> str:
            # The same environment each time: it names the server's socket, and the server's own is the session's.
            done = subprocess.run([*tmux, *args], capture_output=True, text=True, env=env, check=True)
            return done.stdout

        def screen() -> str:
            text = run_tmux("capture-pane", "-p", "-J", "-t", session)  # -J: a wrapped line read as one
            if not shown or shown[-1] != text:
                shown.append(text)
            return text

        async def shows(*words: str, seconds: float = 20) -> str:
            """The screen, once one reading of it shows all of `words` (a regular expression each)."""

            def all_shown() -> bool:
                text = screen()
                return all(re.search(word, text, re.M) for word in words)

            assert await wait_for(all_shown, seconds=seconds, interval=0.05), f"{words} not shown:\n{screen()}"
            return shown[-1]

        # A shell runs the wrapper and writes down its exit status, as test_top's does: tmux's own (pane_dead_status)
        # is missing now and then, when tmux does not collect the pane's process. The pane stays once the shell
        # ends, so that the wrapper's last words can be read.
        wrapped = ["sh", "-c", '"$@"; echo $? > "$0"', str(status_file), *claude]
        run_tmux(
            *("new-session", "-d", "-s", session, "-x", "120", "-y", "40", "-c", str(project), *wrapped),
            *(";", "set-option", "-t", session, "remain-on-exit", "on"),
        )
        socket = Path(run_tmux("display-message", "-p", "#{socket_path}").strip())
        try:
            await shows(r"\? for shortcuts", seconds=30)  # ready for input
            run_tmux("send-keys", "-t", session, "-l", PROMPT)
            await shows(rf"{INPUT}\s{re.escape(PROMPT)}")  # \s: Claude Code puts a no-break space after the mark
            run_tmux("send-keys", "-t", session, "Enter")

            # The wave, running: launched, each builder in the list of the message and with a live row below the
            # prompt, Claude Code waiting for all four; no builder has been answered yet.
            running = await shows(
                f"{BUILDERS} background agents launched",
                *(rf"[├└] aether-builder {n}\s*$" for n in range(1, BUILDERS + 1)),
                f"Waiting for {BUILDERS} background agents to finish",
                *(rf"◯ aether-builder +aether-builder {n} " for n in range(1, BUILDERS + 1)),
                seconds=20,
            )
            assert "finished" not in running, running

            # Each builder finished, then the parent's turn ended: Claude Code waits for the user again.
            finished = [rf'Agent "aether-builder {n}" finished' for n in range(1, BUILDERS + 1)]
            done = await shows(*finished, r"· done \d", seconds=BUILDER_DELAY_S + 20)
            assert await wait_for(lambda: "esc to interrupt" not in screen(), seconds=10), screen()

            run_tmux("send-keys", "-t", session, "-l", "/exit")
            await shows(rf"{INPUT}\s/exit")
            run_tmux("send-keys", "-t", session, "Enter")
            ended = await wait_for(lambda: status_file.is_file() and status_file.read_text().endswith("\n"), seconds=15)
            assert ended, f"the wrapper did not end with Claude Code:\n{screen()}"
            last = await shows(rf"{BUILDERS} sub-agent\(s\), {BUILDERS} verified on their castes' models", seconds=5)
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True, env=env, check=False)
            socket.unlink(missing_ok=True)  # tmux leaves it behind
        messages = messages_of(backend)

    # The wrapper ended with Claude Code, with its status, and said what it routed; no Claude Code is left.
    assert status_file.read_text().strip() == "0", last
    assert await wait_for(lambda: not claude_processes(str(tmp_path)), seconds=10)
    for text in shown:
        assert not any(word in text for word in NEVER_SHOWN), text
    assert "PARENT-NOTE" in done

    # At the wire: each builder's requests on the caste's model, under its own agent id (Claude Code's
    # x-claude-code-agent-id header); the parent's, with none, on its own model.
    assert all(r.authorized for r in backend.requests)  # the real token reached the backend, never the key
    by_agent: dict[str | None, set[str | None]] = {}
    for request in messages:
        by_agent.setdefault(request.agent_id, set()).add(request.model)
    assert by_agent.pop(None) == {PARENT_MODEL}
    assert len(by_agent) == BUILDERS and all(models == {CASTE_MODELS["builder"]} for models in by_agent.values())

    # In the spawn log: a verified wire record of each builder, under the agent id the backend saw.
    records = wire_records(project)
    builders = [r for r in records if r["agent_id"] is not None]
    assert sorted(r["agent_id"] for r in builders) == sorted(by_agent), builders
    for record in builders:
        assert record["caste"] == "builder" and record["model"] == CASTE_MODELS["builder"], record
        assert record["routing_verified"] and record["status"] == "succeeded", record
    (parent,) = [r for r in records if r["agent_id"] is None]
    assert parent["caste"] == "session" and parent["requests_by_model"] == {PARENT_MODEL: parent["requests"]}
