"""Stopping a worker from outside its session: `aether-mcp top` asks the server that runs it.

Every server listens on an abstract Unix socket named after itself (its pid and start time, as its workers'
notes in `.aether/running/` record it), and takes one request there: `{"cancel": worker_id}`. The worker then
ends as its own session's cancel_worker would end it: killed with every process it started, and recorded by its
server as cancelled. Only a process of the server's own user that is no worker's is heard: not the server or
anything below it, and nothing that carries a worker's mark in its environment (any server's worker, and what
it starts, even detached). Another local user, or a worker's Bash, is refused before a byte is read.

What this cannot tell apart: a worker with Bash runs as the user, and a process it detaches after dropping
its mark looks like any of the user's. Such a process could stop the worker with kill(2) as well; the socket
grants nothing beyond stopping a worker, and a worker's session learns of it as of any other cancel.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketAttribute

from .. import procs
from ..errors import AetherError
from ..workers.groups import MARK_VARIABLE
from .local_socket import encode, peer, read_message, read_reply

if TYPE_CHECKING:
    from ..workers.colony import Colony

log = logging.getLogger("aether_mcp")

SERVER = re.compile(r"\d{1,10}/\d{1,20}")  # procs.identity(): `<pid>/<start time>`
CANCEL_WAIT_S = 10.0  # how long the server waits for a cancelled worker to be dead and logged before it answers


def address(server: str) -> str:
    """The control socket of the server `<pid>/<start time>`: this user's."""
    return f"\0aether-mcp-control/{os.getuid()}/{server}"


def may_control(pid: int, uid: int, server_pid: int) -> bool:
    """Whether a peer may stop this server's workers: this user's, neither the server nor below it, and no
    worker's (its environment, which must be readable, carries no worker's mark)."""
    if uid != os.getuid() or server_pid in (pid, *procs.ancestors(pid)):
        return False
    names = procs.environment_names(pid)
    return names is not None and MARK_VARIABLE not in names


async def serve(colony: Colony, *, task_status: Any) -> None:
    """Take cancel requests until cancelled; reports the address, or None when it cannot be had (no /proc)."""
    server_pid = os.getpid()
    where = address(procs.identity())
    try:
        listener = await anyio.create_unix_listener(where)
    except OSError:
        task_status.started(None)
        return
    task_status.started(where)

    async def one(stream: Any) -> None:
        try:
            async with stream:
                pid, uid = peer(stream.extra(SocketAttribute.raw_socket))  # noqa: S610 (anyio, not Django)
                if not may_control(pid, uid, server_pid):
                    log.warning("a control request from pid %d (uid %d) was refused", pid, uid)
                    return
                request = None
                with anyio.move_on_after(5):
                    request = await read_message(stream)
                reply = await _cancel(colony, request)
                await stream.send(encode(reply))
        except Exception as exc:  # noqa: BLE001 (one broken request must not end the server)
            log.warning("a control request failed: %s: %s", type(exc).__name__, exc)

    async with listener:
        await listener.serve(one)


async def _cancel(colony: Colony, request: dict[str, Any] | None) -> dict[str, Any]:
    worker_id = request.get("cancel") if request is not None else None
    if not isinstance(worker_id, str):
        return {"error": "The request names no worker to cancel."}
    try:
        worker = colony.cancel(worker_id, owner=None)
    except AetherError as exc:
        return {"error": str(exc)}
    with anyio.move_on_after(CANCEL_WAIT_S):
        await worker.done.wait()
    return {"worker_id": worker_id, "status": worker.status}


def cancel(server: str, worker_id: str, timeout_s: float = CANCEL_WAIT_S + 5) -> str:
    """Ask the server `server` (`<pid>/<start time>`) to cancel `worker_id`; the worker's status after it.
    AetherError when the server is gone, is not this user's, or refuses."""
    if not SERVER.fullmatch(server):  # from a note on disk: only a pid and a start time name a server
        raise AetherError(f"The note of worker '{worker_id}' names no server ({server!r}).")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(address(server))
        except OSError:
            raise AetherError(f"The server of worker '{worker_id}' is gone; it can no longer be cancelled.") from None
        pid, uid = peer(sock)
        if uid != os.getuid() or procs.identity(pid) != server:
            raise AetherError(f"Another process holds the control socket of worker '{worker_id}''s server.")
        try:
            sock.sendall(encode({"cancel": worker_id}))
            reply = read_reply(sock)
        except (OSError, ValueError) as exc:
            raise AetherError(f"The server did not answer the cancel of '{worker_id}': {exc}") from None
    if reply is None or "error" in reply:
        raise AetherError(str(reply.get("error") if reply else "The server gave no answer."))
    return str(reply.get("status"))
