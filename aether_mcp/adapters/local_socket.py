"""What the hand-over and the control socket share: a message is one JSON object on one line, bounded, and
the process at the other end is the one the kernel names.

Each end checks its peer itself (`handoff`, `control`); this module only frames and reads. Standard library
only at import (anyio when a server reads): the hook loads it on every sub-agent call.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Mapping
from typing import Any

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a hand-over carries the sub-agent's prompt: bounded, generously
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


def peer(sock: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process at the other end of a connected Unix socket, as the kernel says."""
    pid, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid


def encode(message: Mapping[str, Any]) -> bytes:
    """`message` as it goes on the socket: its JSON, then a newline."""
    return (json.dumps(message) + "\n").encode()


def read_reply(sock: socket.socket) -> dict[str, Any] | None:
    """One JSON object on one line, from a blocking socket; None when there is none."""
    data = bytearray()
    while not data.endswith(b"\n") and len(data) <= MAX_MESSAGE_BYTES:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    reply = json.loads(data) if data.strip() else None
    return reply if isinstance(reply, dict) else None


async def read_message(stream: Any) -> dict[str, Any] | None:
    """One JSON object on one line (at most MAX_MESSAGE_BYTES), from an anyio stream; None when there is none."""
    import anyio  # here, not at the top: the hook imports this module and never needs anyio

    data = bytearray()
    try:
        while not data.endswith(b"\n"):
            data += await stream.receive(65536)
            if len(data) > MAX_MESSAGE_BYTES:
                return None
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        return None
    try:
        message = json.loads(data)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None
