"""The hook hands a denied sub-agent call to the aether-mcp server of the same Claude Code session.

Claude Code starts its stdio MCP servers and runs its hooks as children of one
process (a server may have a wrapper between, `sh -c` or uvx). A stdio server
listens on an abstract Unix socket named after that process (its pid and
start time, so a reused pid names another socket); the
hook, finding the same process among its ancestors, connects and hands over
the call: the server starts the worker at once and answers with its id. So a
wave of sub-agent calls in one message starts side by side, as native
sub-agents would, and the parent never writes a prompt twice.

Both ends check who is at the other: the server takes a call only from a
process of the same user that descends from its own Claude Code process and
not from the server itself (a worker, whatever its Bash runs, cannot start
workers this way); the hook hands over only to a process of the same user
just below its Claude Code process (its child, or a wrapper's). Nothing a repository writes and no
other local user can reach either end, and an abstract socket leaves no file
behind: it ends with the server.

Standard library and anyio only: the hook loads this module on every
sub-agent call, and must answer in a few tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from .. import procs
from ..errors import AetherError
from ..private_files import read_regular, user_config_dir, user_config_path, write_private
from ..profile.names import caste_key
from .local_socket import MAX_MESSAGE_BYTES, encode, peer, read_message, read_reply

WRAPPERS = 3  # processes that may stand between Claude Code and its stdio server (a shell, uvx, a venv's shim)
HOOK_TIMEOUT_S = 15.0  # how long the hook waits for the server to accept a call
STARTING_S = 15.0  # how long the hook waits for a server of its session that is still starting
# The command line of an aether-mcp server: the script, the module, or either inside a wrapper's (sh -c, uvx).
_SERVES = re.compile(rb"aether[-_]mcp\b.*\bserve\b")
READ_TIMEOUT_S = 5.0  # how long the server waits for a connected hook to send its call

Reply = dict[str, Any]
# Takes a call; gives the reply, and what to do should the hook be gone before the reply reaches it.
TakeCall = Callable[[dict[str, Any]], Awaitable[tuple[Reply, Callable[[], object] | None]]]
log = logging.getLogger("aether_mcp")


def address(claude_pid: int) -> str | None:
    """The session's socket: this user's, named by the Claude Code process's pid and start time."""
    started = procs.start_time(claude_pid)
    if started is None:
        return None
    return f"\0aether-mcp/{os.getuid()}/{claude_pid}/{started}"


# --- the hook's end ---------------------------------------------------------------------------------------


def hand_over(call: dict[str, Any], timeout_s: float = HOOK_TIMEOUT_S) -> Reply | None:
    """Give `call` to the session's aether-mcp server; its reply, or None when no server of the session
    takes calls (none runs, it is an older aether-mcp, or it does not answer in time)."""
    line = encode(call)
    if len(line) > MAX_MESSAGE_BYTES:
        return None
    for claude_pid in procs.ancestors(os.getpid()):
        where = address(claude_pid)
        if where is None:
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            try:
                sock.connect(where)
            except OSError:
                continue  # no server listens for this process: try the next ancestor
            pid, uid = peer(sock)
            if uid != os.getuid() or claude_pid not in procs.ancestors(pid)[: WRAPPERS + 1]:
                return None  # someone else holds the name: hand nothing over
            try:
                sock.sendall(line)
                return read_reply(sock)
            except (OSError, ValueError):
                return None
    return None


def session_claude() -> int | None:
    """The Claude Code process that runs this hook (its nearest Claude Code ancestor); None outside one."""
    return next((pid for pid in procs.ancestors(os.getpid()) if procs.is_claude_code(pid)), None)


def server_running(claude_pid: int) -> bool:
    """Whether an aether-mcp server runs below the Claude Code process `claude_pid` (itself, or through up to
    WRAPPERS wrappers): one that has not yet opened its socket is still starting."""
    return any(_SERVES.search(procs.command_line(pid)) for pid in procs.descendants(claude_pid, WRAPPERS + 1))


def hand_over_when_up(call: dict[str, Any], claude_pid: int, wait_s: float = STARTING_S) -> Reply | None:
    """Hand `call` over once the session's server, which is starting, takes calls; None when it does not within
    `wait_s`, or stops running. Claude Code starts its MCP servers with the session and runs its first tool
    calls without waiting for them."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and server_running(claude_pid):
        reply = hand_over(call)
        if reply is not None:
            return reply
        time.sleep(0.1)  # paces the knocks: the server taking the call is what ends the wait
    return None


# --- the server's end -------------------------------------------------------------------------------------


def session_process() -> int:
    """The Claude Code process this stdio server serves: its parent, which starts its stdio servers itself, or,
    with a wrapper between them (`sh -c`, uvx), the nearest Claude Code CLI among the next few ancestors."""
    parents = procs.ancestors(os.getpid())[: WRAPPERS + 1]
    return next((pid for pid in parents if procs.is_claude_code(pid)), os.getppid())


def may_hand_over(pid: int, uid: int, claude_pid: int, server_pid: int) -> bool:
    """Whether a peer may hand calls to this server: this user's, below its Claude Code process, and not
    below the server itself (its workers and whatever they start)."""
    if uid != os.getuid():
        return False
    for ancestor in [pid, *procs.ancestors(pid)]:
        if ancestor == server_pid:
            return False
        if ancestor == claude_pid:
            return True
    return False


async def serve(take: TakeCall, *, task_status: Any) -> None:
    """Take the calls the session's hooks hand over, until cancelled. Reports None (nothing to take) when
    the socket cannot be had: a second aether-mcp server in the session, or no /proc."""
    import anyio  # here, not at the top: the hook imports this module and never needs anyio
    from anyio.abc import SocketAttribute

    claude_pid, server_pid = session_process(), os.getpid()
    where = address(claude_pid)
    try:
        listener = await anyio.create_unix_listener(where) if where is not None else None
    except OSError:
        listener = None
    task_status.started(where if listener is not None else None)
    if listener is None:
        return

    async def one(stream: Any) -> None:
        try:
            async with stream:
                pid, uid = peer(stream.extra(SocketAttribute.raw_socket))  # noqa: S610 (anyio, not Django)
                if not may_hand_over(pid, uid, claude_pid, server_pid):
                    log.warning("a hand-over from pid %d (uid %d) was refused: not this session's hook", pid, uid)
                    return
                call = None
                with anyio.move_on_after(READ_TIMEOUT_S):
                    call = await read_message(stream)
                if call is None:
                    return
                reply, undo = await take(call)
                try:
                    await stream.send(encode(reply))
                except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    if undo is not None:  # the hook gave up waiting: it will not tell the parent of this worker
                        undo()
        except Exception as exc:  # noqa: BLE001 (one broken hand-over must not end the server)
            log.warning("a hand-over failed: %s: %s", type(exc).__name__, exc)

    async with listener:
        await listener.serve(one)


# --- with no server of the session: the call kept for the parent to name --------------------------------

STORED_FOR_S = 3600.0  # a kept call the parent has not named within an hour is gone
_CALL_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def calls_dir(environ: Mapping[str, str] | None = None) -> Path:
    return user_config_path(environ) / "calls"


def keep(call: dict[str, Any], environ: Mapping[str, str] | None = None) -> str | None:
    """Keep `call` (0600, this user's config folder) under a new random id, for spawn_worker's call_id; None
    when it cannot be kept. Calls kept over STORED_FOR_S ago are cleared on the way."""
    try:
        base, folder = user_config_dir(environ), calls_dir(environ)  # the first made 0700 if missing
        _clear_stale(folder)
        call_id = secrets.token_urlsafe(16)
        write_private(folder / f"{call_id}.json", base, json.dumps(call).encode())
    except (OSError, AetherError):
        return None
    return call_id


def take_kept(call_id: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The call kept under `call_id`, removed as it is taken (a call starts one worker, once)."""
    unknown = AetherError(
        f"No sub-agent call '{call_id}' is waiting: each is taken once, within an hour of its denial.",
        "Pass the call's prompt as task instead",
    )
    if not _CALL_ID.fullmatch(call_id):
        raise unknown
    path = calls_dir(environ) / f"{call_id}.json"
    try:
        data, info = read_regular(path, MAX_MESSAGE_BYTES + 1)
    except (OSError, AetherError):
        raise unknown from None
    path.unlink(missing_ok=True)
    if info.st_uid != os.getuid() or time.time() - info.st_mtime > STORED_FOR_S or len(data) > MAX_MESSAGE_BYTES:
        raise unknown
    call = json.loads(data)
    if not isinstance(call, dict):
        raise unknown
    return call


def from_call(call: dict[str, Any]) -> dict[str, Any]:
    """The spawn a sub-agent call asks for: its caste, prompt, description, worktree and directory."""
    given = call.get("tool_input")
    given = given if isinstance(given, dict) else {}
    cwd = call.get("cwd")
    return {
        "caste": given.get("subagent_type"),
        "task": given.get("prompt"),
        "description": given.get("description"),
        "isolation": "worktree" if given.get("isolation") == "worktree" else None,
        "cwd": cwd if isinstance(cwd, str) else None,
    }


def with_kept_call(call_id: str, caste: str, given: dict[str, Any]) -> dict[str, Any]:
    """A spawn's arguments completed from the sub-agent call the hook kept under `call_id`."""
    kept = from_call(take_kept(call_id))
    if caste_key(str(kept["caste"])) != caste_key(caste):
        raise AetherError(f"The call '{call_id}' was for the caste '{kept['caste']}', not '{caste}'.")
    return {name: value if value not in (None, "") else kept.get(name) for name, value in given.items()}


def _clear_stale(folder: Path) -> None:
    if not folder.is_dir():
        return
    for entry in os.scandir(folder):
        with contextlib.suppress(OSError):
            if time.time() - entry.stat(follow_symlinks=False).st_mtime > STORED_FOR_S:
                os.unlink(entry.path)
