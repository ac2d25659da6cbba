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
names (one `git rev-parse`), so both see the same castes. A fault with any
other call lets it through (exit 0, a note on stderr): the hook routes work,
it is not a guard. A sub-agent call it cannot decide is denied with the cause
and the fix: let through, a routed caste would run on the parent's model in
silence.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from ..hook_settings import GET_TOOL, PROBE, collect_call
from ..session import hook as wire_hook

SUBAGENT_TOOLS = ("Task", "Agent")
SPAWN_TOOL = "mcp__aether__spawn_worker"
# What of a sub-agent call the worker takes: its prompt, a description naming it, a worktree of its own.
HANDED_OVER = ("subagent_type", "prompt", "description", "isolation", "run_in_background")
MAX_EVENT_BYTES = 4 * 1024 * 1024  # a hook event carries the sub-agent's prompt: bounded, generously


def pre_tool_use(event: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The hook's answer to one event: for a routed caste, a denial saying the worker runs already under aether-mcp
    (or, with no server of the session to take it, the exact call that starts it); else None (no opinion)."""
    if event.get("tool_name") not in SUBAGENT_TOOLS:
        return None
    tool_input = event.get("tool_input")
    if not isinstance(tool_input, dict):
        return None
    wanted = tool_input.get("subagent_type")
    if not isinstance(wanted, str) or not wanted.strip():
        return None
    from ..profile.names import caste_key  # the castes are read only for a sub-agent call outside a wrapped session
    from . import handoff

    cwd = Path(str(event.get("cwd") or os.getcwd()))
    caste = routed_castes(cwd, environ).get(caste_key(wanted))
    if caste is None:
        return None
    call = {
        "tool_input": {key: tool_input[key] for key in HANDED_OVER if key in tool_input},
        "cwd": str(cwd),
    }
    probe = event.get(PROBE) is True
    reply = None if probe else handoff.hand_over(call)
    session = None if probe or reply is not None else handoff.session_claude()
    if session is not None and handoff.server_running(session):  # still starting: its socket is not open yet
        reply = handoff.hand_over_when_up(call, session)
    background = tool_input.get("run_in_background") is not False  # as Claude Code runs a sub-agent by default
    if reply is not None and isinstance(reply.get("worker_id"), str):
        reason = _started(wanted, reply, background)
    elif reply is not None and isinstance(reply.get("error"), str):
        reason = f'"{wanted}" is an Aether caste routed by aether-mcp, which could not start it: {reply["error"]}'
    elif session is not None and not handoff.server_running(session):
        reason = _no_server(wanted, cwd)
    else:
        kept = None if probe else handoff.keep(call, environ)
        reason = _fallback(wanted, caste, kept, background, event["tool_name"])
    return _deny(reason)


def _no_server(wanted: str, cwd: Path) -> str:
    """The session has no aether-mcp server: declined at Claude Code's first start, disabled, or unable to start.
    The first line is for the person; no tool is named, since the session has none of aether-mcp's."""
    return (
        f"aether-mcp is not running in this Claude Code session, so the Aether caste {json.dumps(wanted)} was "
        "stopped rather than run on this session's model without proof. To fix it: quit, run `aether-mcp "
        f'doctor` in {cwd}, and start claude again; when it asks about the project\'s MCP server "aether", '
        "choose to use it. Tell the user exactly this; do not retry the call."
    )


def _deny(reason: str) -> dict[str, Any]:
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": reason,
        }
    }


def _started(wanted: str, reply: Mapping[str, Any], background: bool) -> str:
    worker_id = reply["worker_id"]
    collect = collect_call(worker_id)
    when = "It runs in the background; when you need its result, make" if background else "Collect its result with"
    return (
        f'"{wanted}" is an Aether caste routed by aether-mcp, which has started it as worker {worker_id} on '
        f"{reply.get('model') or 'the CLI default model'}, with proof of which model serves it. It is running "
        f"now: do not start it again. {when} this exact call (make the calls for several workers in one "
        f"message: they run side by side):\n{collect}"
    )


def _fallback(wanted: str, caste: str, call_id: str | None, background: bool, tool: str) -> str:
    """Today's advice, when no aether-mcp server of this session took the call: the exact spawn_worker call."""
    arguments: dict[str, Any] = {"caste": caste, "call_id": call_id} if call_id else {"caste": caste}
    if background:
        arguments["wait"] = False
    how = "" if call_id else ", with task set to this call's prompt, unchanged"
    then = f" It returns at once; collect the worker later with {GET_TOOL}." if background else ""
    return (
        f'"{wanted}" is an Aether caste routed by aether-mcp: it runs on its own model, with proof of which model '
        f"served it. Do not start it with the {tool} tool. No aether-mcp server of this session took the call "
        f"(none is running in it, or it is older than this hook), so start it with this exact call{how}.{then}\n"
        f"{SPAWN_TOOL} {json.dumps(arguments)}"
    )


def routed_castes(cwd: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Caste key -> the caste's name, for every caste aether-mcp would run from `cwd`: agents and profile castes."""
    from ..git import project_root
    from ..profile.agents import agent_dirs, scan_agents
    from ..profile.names import caste_key, caste_name

    home = environ.get("HOME")
    cwd = cwd.resolve()  # git names the work tree's top by its real path; the folders between must match it
    scan = scan_agents(agent_dirs(cwd, project_root(cwd), Path(home) if home else None))
    castes = {key: caste_name(agent.name) for key, agent in scan.agents.items()}
    for name in _profile_castes(cwd, environ):
        castes[caste_key(name)] = name
    return castes


def _profile_castes(cwd: Path, environ: Mapping[str, str]) -> list[str]:
    """The castes the profile in use names, read as plain YAML; none when there is no profile. A profile that
    cannot be read raises: the call is then denied with the cause, never let through undecided."""
    from .. import safe_yaml  # PyYAML: when the hook runs, not whenever the command line starts
    from ..profile.location import locate

    try:
        data = safe_yaml.load(locate(None, cwd, environ).path.read_text(encoding="utf-8"))
    except FileNotFoundError:
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
    """Read one event from stdin, print the answer (if any); always exit 0.

    A fault with an event that is not a sub-agent call lets it through (the hook routes work, it is not a
    guard). A sub-agent call the hook cannot decide (a file it cannot read, a fault of its own) is denied with
    the cause and the fix: let through, it could be a routed caste running on the parent's model unseen."""
    try:
        text = stdin.read(MAX_EVENT_BYTES + 1)
        if len(text) > MAX_EVENT_BYTES:
            raise ValueError(f"the event is over {MAX_EVENT_BYTES:,} characters")
        event = json.loads(text)
    except Exception as exc:  # noqa: BLE001 (an event it cannot read is no sub-agent call it knows of)
        print(f"aether-mcp hook: {type(exc).__name__}: {exc}; the call goes ahead unrouted", file=stderr)
        return 0
    if not isinstance(event, dict):
        return 0
    if event.get("tool_name") in SUBAGENT_TOOLS and event.get(PROBE) is not True and wire_hook.wired(environ):
        return 0  # the session's gateway routes each caste's sub-agent itself: no opinion, and nothing to read
    try:
        answer = pre_tool_use(event, environ)
    except Exception as exc:  # noqa: BLE001 (any fault: denied with its cause if it may be a caste, else through)
        if event.get("tool_name") not in SUBAGENT_TOOLS:
            print(f"aether-mcp hook: {type(exc).__name__}: {exc}; the call goes ahead", file=stderr)
            return 0
        answer = _deny(_undecided(event, exc))
    if answer is not None:
        stdout.write(json.dumps(answer))
    return 0


def _undecided(event: Mapping[str, Any], exc: Exception) -> str:
    tool_input = event.get("tool_input")
    wanted = tool_input.get("subagent_type") if isinstance(tool_input, dict) else None
    cause = f"{type(exc).__name__}: {exc}"[:500]
    return (
        f"aether-mcp could not tell whether {json.dumps(wanted)} is an Aether caste it routes ({cause}), so it "
        "stopped this call rather than let it run on this session's model without proof. Run `aether-mcp "
        "doctor` in the project to see the cause and its fix; `aether-mcp uninstall` turns routing off."
    )


def main() -> int:
    return run(sys.stdin, sys.stdout, sys.stderr, os.environ)
