"""The hook as Claude Code's settings files spell it: its matcher and command, and doctor's probe key.

install writes these, doctor checks them, and the hook and the command line read them; so they live below
all of them. Standard library only: the hook loads this module before every sub-agent call.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

MATCHER = "Task|Agent"
HOOK_WORDS = ["hook", "pre-tool-use"]  # what follows the program in the command install registers
# The hooks that tell a wrapped session's gateway of each sub-agent: Claude Code's event -> the command's word.
WIRE_EVENTS = {"SubagentStart": "subagent-start", "SubagentStop": "subagent-stop"}


def shared_hook_command(word: str = HOOK_WORDS[1]) -> str:
    """A hook's command in shared settings (a file the team commits), and as an older install wrote the sub-agent
    hook: the aether-mcp each user has on PATH."""
    return shlex.join(["aether-mcp", "hook", word])


COMMAND = shared_hook_command()
# An event with this key set is doctor's probe: the answer is given, and no worker is started or call kept.
PROBE = "aether_mcp_probe"
GET_TOOL = "mcp__aether__get_worker"
COLLECT_WAIT_S = 900  # get_worker's wait: as long as a worker usually takes, short of its timeout


def collect_call(worker_id: str) -> str:
    """The exact call that collects a running worker: the tool's full name, then its arguments as JSON."""
    return f"{GET_TOOL} {json.dumps({'worker_id': worker_id, 'wait_s': COLLECT_WAIT_S})}"


WIRE_HOOK_FILE = Path(__file__).parent / "session" / "hook.py"
WIRE_HOOK_FLAGS = ["-S", "-E"]  # no site (no package finders, no .pth files) and no PYTHON* variables: it starts fast
WIRED = "wired"  # the hook file's check: exit 0 when this session's own gateway routes its sub-agents, else 1
# The sub-agent hook as install writes it: in a session run through `aether-mcp run`, the hook file's check comes
# first, and when it holds the call goes ahead with nothing else loaded; otherwise (or when it fails) the hook runs.
GATED = re.compile(r'\[ -n "\$AETHER_MCP_WIRE" \] && (?P<gate>.+?) \|\| (?P<hook>.+)')


def hook_command(executable: str = sys.executable) -> str:
    """The sub-agent hook's command for Claude Code's shell: this installation's own aether-mcp by its absolute
    path, so that it runs whatever PATH Claude Code has (a hook that cannot run lets every caste run unrouted),
    behind the wrapped session's check."""
    script = Path(executable).parent / "aether-mcp"
    program = [str(script)] if os.access(script, os.X_OK) else [executable, "-m", "aether_mcp"]
    gate = shlex.join([executable, *WIRE_HOOK_FLAGS, str(WIRE_HOOK_FILE), WIRED])
    return f'[ -n "$AETHER_MCP_WIRE" ] && {gate} || {shlex.join([*program, *HOOK_WORDS])}'


def wire_hook_command(word: str, executable: str = sys.executable) -> str:
    """A wire hook's command (SubagentStart, SubagentStop): this installation's hook file, run by its Python with
    the standard library alone, since each sub-agent's first request waits for it."""
    return shlex.join([executable, *WIRE_HOOK_FLAGS, str(WIRE_HOOK_FILE), word])


def is_hook_command(command: str, word: str = HOOK_WORDS[1]) -> bool:
    """Whether `command` runs the hook `word`: some aether-mcp's (by path or on PATH), `python -m aether_mcp`'s, or
    (a wire hook) some installation's hook file."""
    gated = GATED.fullmatch(command)
    if gated is not None:
        if word != HOOK_WORDS[1] or not _runs_hook_file(gated["gate"], WIRED):
            return False
        command = gated["hook"]
    elif _runs_hook_file(command, word):
        return word in WIRE_EVENTS.values()
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    program = words[:-2]
    if words[-2:] != ["hook", word]:
        return False
    return (len(program) == 1 and Path(program[0]).name == "aether-mcp") or program[1:] == ["-m", "aether_mcp"]


def _runs_hook_file(command: str, word: str) -> bool:
    """Whether `command` runs some installation's hook file with `word`, as install writes it."""
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    return (
        len(words) == 5
        and words[1:3] == WIRE_HOOK_FLAGS
        and words[3].endswith("/aether_mcp/session/hook.py")
        and words[4] == word
    )
