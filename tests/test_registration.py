"""Registration in real MCP clients: Claude Code's `claude mcp list`, and the MCP Inspector CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from aether_mcp.profile.parsing import parse_profile
from aether_mcp.workers.claude_cli import find_cli

INSPECTOR = ROOT / ".npm-tools" / "node_modules" / ".bin" / "mcp-inspector"
TOOLS = ["get_caste_model", "set_caste_model", "reset_caste_model", "check_routing"]
TOOLS += ["spawn_worker", "continue_worker", "get_worker", "list_workers", "cancel_worker", "discard_worker"]


def client_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TMPDIR", "USER", "SHELL")}
    env["HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # where `aether-mcp` lives
    env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    return env


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """A fresh HOME and a project directory that HOME trusts."""
    home, project = tmp_path / "client-home", tmp_path / "project"
    home.mkdir()
    (project / ".claude").mkdir(parents=True)
    (home / ".claude.json").write_text(json.dumps({"projects": {str(project): {"hasTrustDialogAccepted": True}}}))
    return home, project


def claude(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    cli = find_cli(parse_profile("{}", "none"), os.environ).path
    return subprocess.run(
        [cli, *args], capture_output=True, text=True, env=client_env(home), cwd=cwd, timeout=120, check=False
    )


def test_claude_mcp_list_connects_to_the_shipped_mcp_json(project: tuple[Path, Path]) -> None:
    home, folder = project
    shutil.copyfile(ROOT / "mcp.json", folder / ".mcp.json")
    (folder / ".claude" / "settings.local.json").write_text(json.dumps({"enableAllProjectMcpServers": True}))
    listed = claude("mcp", "list", home=home, cwd=folder)
    assert "aether: aether-mcp serve - ✔ Connected" in listed.stdout, listed.stdout + listed.stderr


def test_claude_mcp_list_connects_after_the_readme_add_line(project: tuple[Path, Path]) -> None:
    home, folder = project
    readme = (ROOT / "README.md").read_text()
    line = "claude mcp add aether -- aether-mcp serve"
    assert line in readme
    added = claude(*line.split()[1:], home=home, cwd=folder)
    assert added.returncode == 0, added.stderr
    listed = claude("mcp", "list", home=home, cwd=folder)
    assert "aether: aether-mcp serve - ✔ Connected" in listed.stdout, listed.stdout + listed.stderr


def inspector(*args: str, cwd: Path) -> dict:
    if not INSPECTOR.exists():
        if os.environ.get("CI"):
            pytest.fail(f"MCP Inspector not installed at {INSPECTOR}: `make inspector` installs it")
        pytest.skip(
            "lists the tools through a second real MCP client, the MCP Inspector, "
            f"which is not installed at {INSPECTOR}: run `make inspector`"
        )
    done = subprocess.run(
        [str(INSPECTOR), "--cli", "aether-mcp", "serve", *args],
        capture_output=True,
        text=True,
        env=client_env(cwd),
        cwd=cwd,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data: dict = json.loads(done.stdout)
    return data


def test_inspector_lists_every_tool_with_annotations_and_output_schema(isolated: Path) -> None:
    tools = {t["name"]: t for t in inspector("--method", "tools/list", cwd=isolated)["tools"]}
    assert sorted(tools) == sorted(TOOLS)
    for tool in tools.values():
        assert tool["annotations"]["title"]
        assert "readOnlyHint" in tool["annotations"]
        assert tool["outputSchema"]["type"] == "object"
    assert tools["get_caste_model"]["annotations"]["readOnlyHint"] is True
    assert tools["spawn_worker"]["annotations"]["readOnlyHint"] is False


def test_inspector_calls_get_caste_model(isolated: Path) -> None:
    answer = inspector(
        "--method", "tools/call", "--tool-name", "get_caste_model", "--tool-arg", "caste=scout", cwd=isolated
    )
    assert answer["structuredContent"]["castes"][0]["model"] == "minimax-2.5"  # the shipped haiku tier
    assert answer["structuredContent"]["rule"] == "packaged default"
