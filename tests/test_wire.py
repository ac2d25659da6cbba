"""Routing at the wire: a real Claude Code session run through `aether-mcp run`, its own sub-agents on their
castes' models, each proven by a wire record in the spawn log."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from helpers import AETHER_PROFILE, run_aether, write_aether_project

from aether_mcp.commands.demo import DEMO_TOKEN, PARENT_MODEL, ParentRun, run_parent
from aether_mcp.profile.parsing import parse_profile
from aether_mcp.testing.backend import Call, LocalBackend, Recorded, Turn
from aether_mcp.workers.claude_cli import find_cli
from aether_mcp.workers.spawn_log import log_path, read_spawn_log

CASTE_MODELS = {"builder": "kimi-k2.5", "scout": "glm-5", "watcher": "minimax-2.5"}
WRAPPER = (sys.executable, "-m", "aether_mcp", "run", "--")
# A builder that may start sub-agents of its own (Aether's builders have no Agent tool; this one nests a watcher).
NESTING_BUILDER = (
    "---\nname: aether-builder\ndescription: Writes code test-first\ntools: Read, Agent\nmodel: sonnet\n---\n\n"
    "You are the Builder ant. BUILDER-RULES: write the failing test first, then the code.\n"
)


def agent_call(agent: str, n: int) -> Call:
    return Call("Agent", {"description": f"{agent} {n}", "prompt": f"task {n} for {agent}", "subagent_type": agent})


def wire_project(project: Path, home: Path, endpoint: str, castes: dict[str, str] = CASTE_MODELS) -> None:
    """An Aether-shaped project, installed (server, hooks) and trusted, whose profile gives each caste a model."""
    project.mkdir()
    home.mkdir(exist_ok=True)
    write_aether_project(project, endpoint, token=DEMO_TOKEN)
    (project / ".claude" / "agents" / "ant" / "aether-builder.md").write_text(NESTING_BUILDER)
    models = "worker_models:\n" + "".join(f"  {caste}: {model}\n" for caste, model in castes.items())
    profile = project / "model-profiles.yaml"
    profile.write_text(
        AETHER_PROFILE.replace("worker_models:\n  watcher: minimax-2.5\n", models)
        .replace("ENDPOINT", endpoint)
        .replace("TOKEN", DEMO_TOKEN)
    )
    env = {**os.environ, "HOME": str(home)}
    installed = run_aether("install", "--trust", cwd=project, env=env)
    assert installed.returncode == 0, installed.stderr
    (home / ".claude.json").write_text(json.dumps({"projects": {str(project): {"hasTrustDialogAccepted": True}}}))


def messages_of(backend: LocalBackend) -> list[Recorded]:
    return [r for r in backend.requests if r.path.startswith("/v1/messages") and "count_tokens" not in r.path]


def wire_records(project: Path) -> list[dict[str, Any]]:
    return [e for e in read_spawn_log(log_path(project / ".aether"), 100) if e.get("mode") == "wire"]


def run_wrapped(project: Path, home: Path, endpoint: str) -> ParentRun:
    cli = find_cli(parse_profile("{}", "none"), os.environ)
    return run_parent(cli.path, project, home, endpoint, wrapper=WRAPPER, allow="Agent")


def test_a_wrapped_sessions_sub_agents_run_on_their_castes_models_with_proof(tmp_path: Path) -> None:
    """4 aether-builder and 1 aether-scout calls in one message, one builder starting a nested aether-watcher: each
    sub-agent's requests reach the backend on its caste's model from the profile (not its agent file's `model:`
    line), the parent's on its own, no call is denied, and the spawn log holds a verified wire record of each."""
    project, home = tmp_path / "project", tmp_path / "home"
    calls = (*(agent_call("aether-builder", n) for n in range(1, 5)), agent_call("aether-scout", 5))
    scripts = {
        PARENT_MODEL: [Turn(calls=calls), Turn(follow=True)],
        "kimi-k2.5": [Turn(calls=(agent_call("aether-watcher", 6),)), Turn(follow=True)],
    }
    with LocalBackend(token=DEMO_TOKEN, scripts=scripts) as backend:
        wire_project(project, home, backend.url)
        parent = run_wrapped(project, home, backend.url)
        messages = messages_of(backend)

    assert parent.exit_code == 0, parent.stderr
    assert parent.denied == []
    assert all(r.authorized for r in backend.requests)  # the real token reached the backend, never the key
    by_agent: dict[str | None, set[str | None]] = {}
    for request in messages:
        by_agent.setdefault(request.agent_id, set()).add(request.model)
    assert by_agent.pop(None) == {PARENT_MODEL}
    routed = sorted(next(iter(models)) or "" for models in by_agent.values())
    assert routed == sorted(["kimi-k2.5"] * 4 + ["glm-5", "minimax-2.5"]), by_agent
    watcher = next(r for r in messages if r.model == "minimax-2.5")
    assert "WATCHER-STEPS" in watcher.system

    records = wire_records(project)
    subagents = [r for r in records if r["agent_id"] is not None]
    assert sorted(r["caste"] for r in subagents) == ["builder"] * 4 + ["scout", "watcher"]
    assert all(r["routing_verified"] and r["status"] == "succeeded" for r in subagents), subagents
    assert all(r["model"] == CASTE_MODELS[r["caste"]] for r in subagents)
    (nested,) = [r for r in subagents if r["caste"] == "watcher"]
    builders = {r["agent_id"] for r in subagents if r["caste"] == "builder"}
    assert nested["parent_agent_id"] in builders
    for record in subagents:  # each was told apart by the SubagentStart hook, before its first request
        details = json.loads((project / ".aether" / "details" / f"{record['worker_id']}.json").read_text())
        assert details["routing_evidence"][0].startswith("told apart by Claude Code's SubagentStart hook")
    (session,) = [r for r in records if r["agent_id"] is None]
    assert session["caste"] == "session" and session["requests_by_model"] == {PARENT_MODEL: session["requests"]}
