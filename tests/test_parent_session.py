"""The whole story: a real Claude Code parent session routes its workers through aether-mcp."""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers import hand_over_ready

from aether_mcp.commands.demo import DEMO_TOKEN, PARENT_MODEL, parent_script, prepare_project, run_parent
from aether_mcp.profile.parsing import parse_profile
from aether_mcp.testing.backend import Call, LocalBackend, Turn
from aether_mcp.workers.claude_cli import find_cli

CASTES = {"builder": "kimi-k2.5", "scout": "glm-5"}


def test_a_parent_session_spawns_a_builder_and_a_scout_on_their_own_models(tmp_path: Path) -> None:
    project, home = tmp_path / "project", tmp_path / "parent-home"
    project.mkdir()
    home.mkdir()
    # Claude Code in -p mode may send its first request before its MCP servers are up: the scripted parent
    # answers it once the server is, and the tool is listed from the next request on.
    ready = hand_over_ready(project)
    with LocalBackend(
        token=DEMO_TOKEN, models=list(CASTES.values()), scripts=parent_script(CASTES), before_answer=ready
    ) as backend:
        prepare_project(project, home, backend.url, CASTES)
        # registered as the README says: the shipped mcp.json, as the project's .mcp.json
        assert json.loads((project / ".mcp.json").read_text()) == {
            "mcpServers": {"aether": {"type": "stdio", "command": "aether-mcp", "args": ["serve"], "env": {}}}
        }
        cli = find_cli(parse_profile("{}", "none"), os.environ)
        run = run_parent(cli.path, project, home, backend.url)
        messages = [r for r in backend.requests if r.path.startswith("/v1/messages")]

    assert run.exit_code == 0, run.stderr
    # parent asks, builder worker, parent again, scout worker, parent's final answer
    assert [r.model for r in messages] == [PARENT_MODEL, "kimi-k2.5", PARENT_MODEL, "glm-5", PARENT_MODEL]
    assert len({r.model for r in messages}) == 3
    assert all("mcp__aether__spawn_worker" in r.tool_names for r in messages[1:] if r.model == PARENT_MODEL)
    assert not any(n.startswith("mcp__aether__") for r in messages if r.model != PARENT_MODEL for n in r.tool_names)
    assert [(r["caste"], r["model"], r["routing_verified"]) for r in run.tool_results] == [
        ("builder", "kimi-k2.5", True),
        ("scout", "glm-5", True),
    ]
    # the parent's final answer carries both tool results
    reported = [json.loads(part.split("\n", 1)[1]) for part in run.final_text.split("\n\ntool result:")[1:]]
    assert [(r["caste"], r["models_reported"]) for r in reported] == [("builder", ["kimi-k2.5"]), ("scout", ["glm-5"])]


def test_without_the_hook_a_wave_spawned_with_wait_false_runs_side_by_side(tmp_path: Path) -> None:
    """The pattern the instructions teach: spawn_worker with wait=false for each caste in one message (each
    returns at once, naming the call that collects it), then those get_worker calls in one message (read-only,
    so Claude Code runs them side by side)."""
    project, home = tmp_path / "project", tmp_path / "parent-home"
    project.mkdir()
    home.mkdir()
    castes = {"builder": "kimi-k2.5", "scout": "glm-5", "watcher": "minimax-2.5"}
    spawn = tuple(
        Call("mcp__aether__spawn_worker", {"caste": c, "task": f"Work as the {c}.", "wait": False}) for c in castes
    )
    script = {PARENT_MODEL: [Turn(calls=spawn), Turn(follow=True)]}
    delays = dict.fromkeys(castes.values(), 4.0)
    with LocalBackend(token=DEMO_TOKEN, models=list(castes.values()), scripts=script, delays=delays) as backend:
        prepare_project(project, home, backend.url, castes)
        cli = find_cli(parse_profile("{}", "none"), os.environ)
        run = run_parent(cli.path, project, home, backend.url)
        messages = [r for r in backend.requests if r.path.startswith("/v1/messages") and "count_tokens" not in r.path]

    assert run.exit_code == 0, run.stderr
    parents = [r for r in messages if r.model == PARENT_MODEL]
    workers = [r for r in messages if r.model != PARENT_MODEL]
    assert len(parents) == 3 and sorted(r.model for r in workers) == sorted(castes.values())
    starts = [r.at for r in workers]
    assert max(starts) - min(starts) < 1.5  # side by side, not one 4 s worker after another
    # the collecting calls were made in one message, all three while the workers ran
    collected = [r for r in run.tool_results if r.get("finished_at")]
    assert sorted((r["caste"], r["model"], r["routing_verified"]) for r in collected) == sorted(
        (c, m, True) for c, m in castes.items()
    )
    assert parents[-1].at - min(starts) < 2 * 4.0  # the parent had all three answers within one worker's time
