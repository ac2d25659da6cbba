"""`aether-mcp hook pre-tool-use`: Claude Code's PreToolUse hook that sends routed castes to spawn_worker.

Aether's commands start castes with the sub-agent tool (`Task` in hook events,
`Agent` on the wire), which runs them on the parent's model with no proof.
This hook denies exactly those calls whose `subagent_type` is a caste (an agent
of the project, or a caste the profile names), with a reason that names the
call to make instead; every other tool and sub-agent type passes untouched.

Claude Code runs it before every sub-agent call, so it must answer in a few
tens of milliseconds: it reads the profile's caste names with plain YAML and
the agents' frontmatter, and never imports pydantic or the MCP SDK. It finds
the project's agents as the server does, up to the work tree's top that git
names (one `git rev-parse`), so both see the same castes. Whatever
goes wrong inside it lets the call through (exit 0, a note on stderr): the
hook routes work, it is not a guard.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from ..git import project_root
from ..profile.agents import agent_dirs, scan_agents
from ..profile.location import locate
from ..profile.names import caste_key, caste_name

SUBAGENT_TOOLS = ("Task", "Agent")
MATCHER = "Task|Agent"
COMMAND = "aether-mcp hook pre-tool-use"
SPAWN_TOOL = "mcp__aether__spawn_worker"
MAX_EVENT_BYTES = 4 * 1024 * 1024  # a hook event carries the sub-agent's prompt: bounded, generously


def pre_tool_use(event: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The hook's answer to one event: a denial naming spawn_worker for a routed caste, else None (no opinion)."""
    if event.get("tool_name") not in SUBAGENT_TOOLS:
        return None
    tool_input = event.get("tool_input")
    wanted = tool_input.get("subagent_type") if isinstance(tool_input, dict) else None
    if not isinstance(wanted, str) or not wanted.strip():
        return None
    cwd = Path(str(event.get("cwd") or os.getcwd()))
    caste = routed_castes(cwd, environ).get(caste_key(wanted))
    if caste is None:
        return None
    background = isinstance(tool_input, dict) and tool_input.get("run_in_background") is True
    reason = (
        f'"{wanted}" is an Aether caste routed by aether-mcp: it runs on its own model, with proof of which model '
        f"served it. Do not start it with the {event['tool_name']} tool. Call {SPAWN_TOOL} instead, with "
        f'caste "{caste}" and task set to this call\'s prompt, unchanged'
        + (", and wait false (then collect it with mcp__aether__get_worker)." if background else ".")
    )
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": reason,
        }
    }


def routed_castes(cwd: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Caste key -> the caste's name, for every caste aether-mcp would run from `cwd`: agents and profile castes."""
    home = environ.get("HOME")
    cwd = cwd.resolve()  # git names the work tree's top by its real path; the folders between must match it
    scan = scan_agents(agent_dirs(cwd, project_root(cwd), Path(home) if home else None))
    castes = {key: caste_name(agent.name) for key, agent in scan.agents.items()}
    for name in _profile_castes(cwd, environ):
        castes[caste_key(name)] = name
    return castes


def _profile_castes(cwd: Path, environ: Mapping[str, str]) -> list[str]:
    """The castes the profile in use names, read as plain YAML; none when it cannot be read."""
    import yaml  # when the hook runs, not whenever the command line (which imports this module) starts

    try:
        data = yaml.safe_load(locate(None, cwd, environ).path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    if not isinstance(data, dict):
        return []
    names: list[str] = []
    for section in ("worker_models", "user_overrides"):
        entries = data.get(section)
        if isinstance(entries, dict):
            names += [str(name) for name in entries]
    return names


def run(stdin: TextIO, stdout: TextIO, stderr: TextIO, environ: Mapping[str, str]) -> int:
    """Read one event from stdin, print the answer (if any). Always exit 0: a broken hook must not block work."""
    try:
        text = stdin.read(MAX_EVENT_BYTES + 1)
        if len(text) > MAX_EVENT_BYTES:
            raise ValueError(f"the event is over {MAX_EVENT_BYTES:,} characters")
        event = json.loads(text)
        answer = pre_tool_use(event, environ) if isinstance(event, dict) else None
    except Exception as exc:  # noqa: BLE001 (any fault lets the call through, and says why)
        print(f"aether-mcp hook: {type(exc).__name__}: {exc}; the call goes ahead unrouted", file=stderr)
        return 0
    if answer is not None:
        stdout.write(json.dumps(answer))
    return 0


def main() -> int:
    return run(sys.stdin, sys.stdout, sys.stderr, os.environ)
