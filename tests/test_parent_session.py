"""The whole story: a real Claude Code parent session routes its workers through aether-mcp."""

from __future__ import annotations

import json
import os
from pathlib import Path

from aether_mcp.commands.demo import DEMO_TOKEN, PARENT_MODEL, parent_script, prepare_project, run_parent
from aether_mcp.profile.parsing import parse_profile
from aether_mcp.testing.backend import LocalBackend
from aether_mcp.workers.claude_cli import find_cli

CASTES = {"builder": "kimi-k2.5", "scout": "glm-5"}


def test_a_parent_session_spawns_a_builder_and_a_scout_on_their_own_models(tmp_path: Path) -> None:
    project, home = tmp_path / "project", tmp_path / "parent-home"
    project.mkdir()
    home.mkdir()
    with LocalBackend(token=DEMO_TOKEN, models=list(CASTES.values()), scripts=parent_script(CASTES)) as backend:
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
    assert all("mcp__aether__spawn_worker" in r.tool_names for r in messages if r.model == PARENT_MODEL)
    assert not any(n.startswith("mcp__aether__") for r in messages if r.model != PARENT_MODEL for n in r.tool_names)
    assert [(r["caste"], r["model"], r["routing_verified"]) for r in run.tool_results] == [
        ("builder", "kimi-k2.5", True),
        ("scout", "glm-5", True),
    ]
    # the parent's final answer carries both tool results
    reported = [json.loads(part.split("\n", 1)[1]) for part in run.final_text.split("\n\ntool result:")[1:]]
    assert [(r["caste"], r["models_reported"]) for r in reported] == [("builder", ["kimi-k2.5"]), ("scout", ["glm-5"])]
