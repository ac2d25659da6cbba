"""Which Claude Code CLI runs the workers: the first of four places that has one."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import AetherError
from ..profile.schema import Profile

CLI_ENV_VAR = "AETHER_CLAUDE_CLI"

CliRule = Literal["AETHER_CLAUDE_CLI", "profile workers.claude_cli", "claude on PATH", "claude-agent-sdk bundle"]


class CliNotFoundError(AetherError):
    """No Claude Code CLI to start a worker with."""


@dataclass(frozen=True)
class ClaudeCli:
    path: str
    rule: CliRule

    def version(self) -> str | None:
        try:
            out = subprocess.run([self.path, "--version"], capture_output=True, text=True, timeout=30, check=False)
        except OSError:
            return None
        return out.stdout.strip() or None


def find_cli(profile: Profile, environ: Mapping[str, str]) -> ClaudeCli:
    """$AETHER_CLAUDE_CLI, the profile's workers.claude_cli, `claude` on PATH, then the claude-agent-sdk bundle."""
    for value, rule in (
        (environ.get(CLI_ENV_VAR), CLI_ENV_VAR),
        (profile.workers.claude_cli, "profile workers.claude_cli"),
    ):
        if value:
            found = shutil.which(value)
            if found is None:
                raise CliNotFoundError(
                    f"The Claude Code CLI named by {rule} ({value}) is not an executable file",
                    f"Point {rule} at a Claude Code CLI, or remove it to use the next place one can be found",
                )
            return ClaudeCli(found, rule)  # type: ignore[arg-type]
    on_path = shutil.which("claude", path=environ.get("PATH"))
    if on_path:
        return ClaudeCli(on_path, "claude on PATH")
    bundled = _bundled_cli()
    if bundled:
        return ClaudeCli(bundled, "claude-agent-sdk bundle")
    raise CliNotFoundError(
        "No Claude Code CLI found",
        "Install one (`npm install -g @anthropic-ai/claude-code`, or `pip install 'aether-mcp[cli]'` for the CLI "
        f"bundled with claude-agent-sdk), or set {CLI_ENV_VAR} to its path",
    )


def _bundled_cli() -> str | None:
    # Located without importing the SDK: only its files are needed.
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "_bundled" / "claude"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None
