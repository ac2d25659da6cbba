"""What an install puts on a machine, and which Claude Code the tests run against."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

from aether_mcp.workers.claude_cli import ClaudeCli, _bundled_cli

ROOT = Path(__file__).resolve().parent.parent
# The CLI bundled in the claude-agent-sdk release that pyproject.toml pins for the tests.
PINNED_CLAUDE_CODE = "2.1.332"


def test_an_install_carries_aether_mcp_and_its_subpackages_only() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    installed = set(find_packages(where=str(ROOT), include=config["include"]))
    assert installed == {
        "aether_mcp",
        "aether_mcp.adapters",
        "aether_mcp.adapters.top",
        "aether_mcp.commands",
        "aether_mcp.profile",
        "aether_mcp.testing",
        "aether_mcp.workers",
    }  # no top-level bench, no tests


def test_the_tests_run_the_pinned_claude_code() -> None:
    bundled = _bundled_cli()
    assert bundled is not None, "the dev extra installs claude-agent-sdk, which bundles the CLI"
    version = ClaudeCli(bundled, "claude-agent-sdk bundle").version()
    assert version is not None and version.split()[0] == PINNED_CLAUDE_CODE
