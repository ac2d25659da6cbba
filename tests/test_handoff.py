"""The hook hands a sub-agent call to the session's stdio server, and only the session's own hook can.

The test process stands where Claude Code does: it is the parent of the stdio
server (through the MCP client) and of the "hooks" it runs as subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    COMMIT_MY_NAME,
    TOKEN,
    as_another_user,
    one_builder_call,
    stdio_server,
    structured,
    write_aether_project,
    write_profile,
)
from mcp import Client

from aether_mcp.adapters import handoff
from aether_mcp.adapters.server import build_server
from aether_mcp.profile.store import ProfileStore
from aether_mcp.testing.backend import LocalBackend, Turn

pytestmark = pytest.mark.anyio

CALL = {"tool_name": "Agent", "tool_input": {"subagent_type": "builder", "prompt": "say hi", "description": "greet"}}


def hook_process(
    code: str, *, user: int | None = None, detach: bool = False, python: str = sys.executable
) -> dict[str, Any] | None:
    """Run `code` (which prints a JSON value) as a child of this process, as Claude Code runs a hook."""
    command = [python, "-c", textwrap.dedent(code)]
    if detach:  # reparented to init: no longer below this process
        command = ["setsid", "-f", *command]  # its output pipe stays open until it is done
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, user=user, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr
    value: dict[str, Any] | None = json.loads(done.stdout)
    return value


HAND_OVER = f"""
    import json
    from aether_mcp.adapters.handoff import hand_over
    print(json.dumps(hand_over({json.dumps(CALL)})))
"""


async def test_the_sessions_hook_starts_the_worker_at_once(colony_profile: Path, backend: LocalBackend) -> None:
    async with Client(stdio_server(colony_profile.parent)) as client:
        reply = hook_process(HAND_OVER)
        assert reply is not None and reply["caste"] == "builder" and reply["model"] == "kimi-k2.5", reply
        result = structured(await client.call_tool("get_worker", {"worker_id": reply["worker_id"], "wait_s": 60}))
    assert (result["status"], result["routing_verified"], result["description"]) == ("succeeded", True, "greet")
    assert backend.models_asked() == ["kimi-k2.5"]


async def test_a_call_the_server_refuses_comes_back_as_its_error(colony_profile: Path, backend: LocalBackend) -> None:
    call = {"tool_name": "Agent", "tool_input": {"subagent_type": "scot", "prompt": "say hi"}}
    async with Client(stdio_server(colony_profile.parent)):
        reply = hook_process(HAND_OVER.replace(json.dumps(CALL), json.dumps(call)))
    assert reply == {"error": "Unknown caste 'scot'. Known castes: builder, scout, watcher."}
    assert backend.models_asked() == []


async def test_without_a_server_of_the_session_nothing_is_handed_over(colony_profile: Path) -> None:
    assert hook_process(HAND_OVER) is None


def knocking(where: str) -> str:
    """An attacker's program: connect to the session's socket `where` itself, send a call, print the answer."""
    return f"""
import json, socket
answer = None
with socket.socket(socket.AF_UNIX) as sock:
    sock.settimeout(20)
    sock.connect({where!r})
    try:
        sock.sendall({json.dumps(json.dumps(CALL))}.encode() + b"\\n")
        answer = sock.recv(65536).decode() or None
    except OSError:  # closed on it
        pass
print(json.dumps(answer))
"""


async def test_a_process_outside_the_session_is_refused(colony_profile: Path, backend: LocalBackend) -> None:
    """Attacker: a process of the same user, not below the session's Claude Code, that knows the address."""
    async with Client(stdio_server(colony_profile.parent)) as client:
        where = handoff.address(os.getpid())
        assert where is not None
        assert hook_process(knocking(where), detach=True) is None  # connected, and closed with no answer
        listed = structured(await client.call_tool("list_workers", {}))
    assert listed["workers"] == [] and backend.models_asked() == []


@as_another_user
async def test_another_user_is_refused(colony_profile: Path, backend: LocalBackend) -> None:
    """Attacker: another local user, below the session's Claude Code (as root can arrange), that knows the
    address: the abstract socket has no file mode to stop it connecting, so the server checks who it is."""
    async with Client(stdio_server(colony_profile.parent)) as client:
        where = handoff.address(os.getpid())
        assert where is not None
        # the standard library only, run by a Python that user can run
        assert hook_process(knocking(where), user=65534, python="/usr/bin/python3") is None
        listed = structured(await client.call_tool("list_workers", {}))
    assert listed["workers"] == [] and backend.models_asked() == []


async def test_a_worker_cannot_start_workers_through_the_hand_over(isolated: Path) -> None:
    """Attacker: a rogue worker's Bash, below the server and so below the session's Claude Code too."""
    probe = f"{sys.executable} -c 'import json; from aether_mcp.adapters.handoff import hand_over; "
    probe += f'print("HANDED", json.dumps(hand_over({json.dumps(CALL)})))' + "'"
    script = {"kimi-k2.5": [Turn(tool="Bash", tool_input={"command": probe, "description": "probe"})]}
    with LocalBackend(token=TOKEN, models=["kimi-k2.5"], scripts=script) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url)
        async with Client(stdio_server(isolated)) as client:
            result = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "probe"}))
            listed = structured(await client.call_tool("list_workers", {}))
    said = Path(result["transcript_path"]).read_text()
    assert "HANDED null" in said
    assert [w["worker_id"] for w in listed["workers"]] == [result["worker_id"]]
    assert backend.models_asked().count("kimi-k2.5") == 2  # the worker's task and its Bash result, nothing more


def test_the_peer_rule() -> None:
    me, parent = os.getpid(), os.getppid()
    assert handoff.may_hand_over(me, os.getuid(), claude_pid=parent, server_pid=-1)
    assert not handoff.may_hand_over(me, os.getuid(), claude_pid=parent, server_pid=me)  # below the server
    assert not handoff.may_hand_over(me, os.getuid() + 1, claude_pid=parent, server_pid=-1)  # another user
    assert not handoff.may_hand_over(me, os.getuid(), claude_pid=-5, server_pid=-1)  # not below the session


def hook_command(event: dict[str, Any], cwd: Path) -> str:
    """The real hook, run as Claude Code runs it (a child of this process): its denial's reason."""
    done = subprocess.run(
        [sys.executable, "-m", "aether_mcp", "hook", "pre-tool-use"],
        input=json.dumps({"cwd": str(cwd), **event}),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    reason: str = json.loads(done.stdout)["hookSpecificOutput"]["permissionDecisionReason"]
    return reason


def named_call(reason: str) -> tuple[str, dict[str, Any]]:
    """The exact call a denial names, on its last line: the tool's full name, then its arguments as JSON."""
    tool, arguments = reason.splitlines()[-1].split(" ", 1)
    return tool, json.loads(arguments)


async def test_the_hooks_denial_names_the_exact_call_that_collects_the_worker(
    colony_profile: Path, backend: LocalBackend
) -> None:
    event = {"tool_name": "Agent", "tool_input": {**CALL["tool_input"], "run_in_background": True}}
    async with Client(stdio_server(colony_profile.parent)) as client:
        reason = hook_command(event, colony_profile.parent)
        tool, arguments = named_call(reason)
        assert tool == "mcp__aether__get_worker" and arguments.keys() == {"worker_id", "wait_s"}
        assert "It runs in the background" in reason and "say hi" not in reason
        result = structured(await client.call_tool(tool.removeprefix("mcp__aether__"), arguments))
    assert (result["caste"], result["status"], result["routing_verified"]) == ("builder", "succeeded", True)
    assert result["description"] == "greet"
    assert len(f"{tool} {json.dumps(arguments)}") < 100  # what the parent writes to collect it


async def test_with_no_server_the_parent_names_the_kept_call(colony_profile: Path, backend: LocalBackend) -> None:
    """The fallback: the hook keeps the call, and spawn_worker takes it by its id, once."""
    prompt = "Write the greeting module, then test it. " * 20
    event = {"tool_name": "Agent", "tool_input": {"subagent_type": "aether-builder", "prompt": prompt}}
    reason = hook_command(
        {**event, "tool_input": {**event["tool_input"], "description": "greeter"}}, colony_profile.parent
    )
    tool, arguments = named_call(reason)
    assert tool == "mcp__aether__spawn_worker" and prompt not in reason
    assert arguments["wait"] is False  # a sub-agent runs in the background unless its call says otherwise
    async with Client(build_server(ProfileStore())) as client:  # a server the hook could not reach
        started = structured(await client.call_tool("spawn_worker", arguments))
        tool, collect = started["next_call"].split(" ", 1)
        assert tool == "mcp__aether__get_worker"
        result = structured(await client.call_tool("get_worker", json.loads(collect)))
        again = await client.call_tool("spawn_worker", arguments)
    assert (result["status"], result["description"]) == ("succeeded", "greeter")
    assert prompt.strip() in backend.requests[-1].conversation[0]
    assert again.is_error and "is waiting: each is taken once" in again.content[0].text  # type: ignore[union-attr]


async def test_an_isolated_sub_agent_call_gets_a_worktree_of_its_own(repo: Path, backend: LocalBackend) -> None:
    project = repo
    backend.on_task["kimi-k2.5"] = Turn(tool="Bash", tool_input={"command": COMMIT_MY_NAME, "description": "commit"})
    event = {"tool_name": "Agent", "tool_input": {**CALL["tool_input"], "isolation": "worktree"}}
    async with Client(stdio_server(project)) as client:
        tool, arguments = named_call(hook_command(event, project))
        result = structured(await client.call_tool(tool.removeprefix("mcp__aether__"), arguments))
    assert result["status"] == "succeeded", result["error"]
    assert result["branch"] == f"aether/{result['worker_id']}" and result["worktree"] != str(project)
    assert [c.split(" ", 1)[1] for c in result["commits"]] == [f"from {Path(result['worktree']).name}"]


@pytest.mark.parametrize(("flag", "background"), [(None, True), (True, True), (False, False)])
async def test_the_denial_says_whether_the_worker_runs_in_the_background(
    colony_profile: Path, backend: LocalBackend, flag: bool | None, background: bool
) -> None:
    """Claude Code runs a sub-agent in the background unless the call says run_in_background false."""
    given = {**CALL["tool_input"]} | ({} if flag is None else {"run_in_background": flag})
    async with Client(stdio_server(colony_profile.parent)) as client:
        reason = hook_command({"tool_name": "Agent", "tool_input": given}, colony_profile.parent)
        tool, arguments = named_call(reason)
        structured(await client.call_tool(tool.removeprefix("mcp__aether__"), arguments))
    assert ("It runs in the background" in reason) is background
    assert ("Collect its result with this exact call" in reason) is not background


def test_a_server_behind_a_wrapper_still_takes_its_sessions_calls(tmp_path: Path) -> None:
    """A real Claude Code parent whose .mcp.json starts the server through a wrapper (`sh -c`, as uvx or a shim
    would): the server serves the nearest Claude Code above it, and the hook's call is still handed over."""
    from aether_mcp.commands.demo import DEMO_TOKEN, PARENT_MODEL, run_parent
    from aether_mcp.profile.parsing import parse_profile
    from aether_mcp.workers.claude_cli import find_cli

    project, home = tmp_path / "project", tmp_path / "parent-home"
    project.mkdir()
    home.mkdir()
    with one_builder_call(project) as backend:
        write_aether_project(project, backend.url, token=DEMO_TOKEN)
        env = {
            **os.environ,
            "HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
        installed = subprocess.run(
            [sys.executable, "-m", "aether_mcp", "install", "--trust"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert installed.returncode == 0, installed.stderr
        wrapped = {"type": "stdio", "command": "sh", "args": ["-c", "aether-mcp serve; true"], "env": {}}
        (project / ".mcp.json").write_text(json.dumps({"mcpServers": {"aether": wrapped}}))
        (home / ".claude.json").write_text(json.dumps({"projects": {str(project): {"hasTrustDialogAccepted": True}}}))
        parent = run_parent(find_cli(parse_profile("{}", "none"), os.environ).path, project, home, backend.url)
        parents = [r for r in backend.requests if r.model == PARENT_MODEL and r.path.startswith("/v1/messages")]
    assert parent.exit_code == 0, parent.stderr
    assert any("which has started it as worker builder-" in said for said in parents[1].conversation)
    assert (parent.tool_results[-1]["caste"], parent.tool_results[-1]["routing_verified"]) == ("builder", True)
