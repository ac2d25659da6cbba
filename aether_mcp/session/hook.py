"""`aether-mcp hook subagent-start|subagent-stop`: tell a wrapped session's gateway of each sub-agent.

Claude Code runs the `SubagentStart` hook synchronously, before the
sub-agent's first request, with its `agent_id` (the id every request of that
sub-agent carries) and `agent_type` (the agent's name); `SubagentStop` when it
ends. In a session run through `aether-mcp run`, the hook passes both to the
session's gateway, found by the environment the session runs with. In any
other session it does nothing. It never stops a sub-agent: an agent the hook
could not tell is told apart by its system prompt, or recorded as unattributed.

The first request of every sub-agent waits for this hook, so it loads the
standard library alone, and install runs it as a file (`python -S -E
.../session/hook.py subagent-start`): with no site, no package and no
command line to load first, it answers in about half the time.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import urlsplit

URL_VAR = "AETHER_MCP_WIRE"  # the session's gateway, set by `aether-mcp run` for the command it runs
KEY_VAR = "AETHER_MCP_WIRE_KEY"
EVENTS = ("subagent-start", "subagent-stop")
WIRED = "wired"  # not an event: the sub-agent hook's check that this session routes at the wire
TIMEOUT_S = 5.0
MAX_EVENT_BYTES = 4 * 1024 * 1024
MAX_ANSWER = 64 * 1024
# What of an event the gateway takes: never the sub-agent's last message.
PASSED = ("session_id", "agent_id", "agent_type", "agent_transcript_path")


def call(environ: Mapping[str, str], method: str, name: str, body: Mapping[str, Any] | None = None) -> Any:
    """One call to the session's gateway; its JSON answer. Raises OSError (or ValueError) when it fails.

    Plain HTTP/1.1 on a socket: http.client would double the hook's start-up (it loads the email parser)."""
    url, key = environ.get(URL_VAR, ""), environ.get(KEY_VAR, "")
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != "127.0.0.1" or not parts.port or not key.isprintable():
        raise ValueError(f"{URL_VAR} does not name a wrapped session's gateway")
    data = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} /aether-mcp/{name} HTTP/1.1\r\nhost: 127.0.0.1:{parts.port}\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\nconnection: close\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT_S) as connection:
        connection.sendall(head.encode() + data)
        answer = b""
        while len(answer) < MAX_ANSWER and (chunk := connection.recv(65536)):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, text = rest.partition(b"\r\n\r\n")
    words = status_line.split()
    if len(words) < 2 or words[1] != b"200":
        raise OSError(f"the gateway answered {status_line[:100]!r}: {text[:200]!r}")
    return json.loads(text)


def wired(environ: Mapping[str, str]) -> bool:
    """Whether this session runs through `aether-mcp run`, whose gateway routes each caste's sub-agent itself: its
    variables are set, its gateway answers to its key, and it is an ancestor of this process. (Variables alone
    could come from a project's settings, and would let castes run unrouted.)"""
    if not environ.get(URL_VAR):
        return False
    try:
        pid = call(environ, "GET", "session").get("pid")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(pid, int) and pid in _ancestors()


def _ancestors() -> list[int]:
    """This process's parent, its parent's parent, ... (at most 16): read from /proc, with nothing imported."""
    found: list[int] = []
    pid = os.getpid()
    while len(found) < 16:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                pid = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
        found.append(pid)
    return found


def run(event_name: str, stdin: TextIO, stderr: TextIO, environ: Mapping[str, str]) -> int:
    """Pass one event on; always exit 0 (a note on stderr when it could not)."""
    if not environ.get(URL_VAR):
        return 0  # not a wrapped session: nothing to tell
    try:
        event = json.loads(stdin.read(MAX_EVENT_BYTES))
        if not isinstance(event, dict):
            return 0
        call(environ, "POST", event_name, {k: event[k] for k in PASSED if isinstance(event.get(k), str)})
    except (OSError, ValueError) as exc:
        print(f"aether-mcp hook {event_name}: the session's gateway was not told ({exc})", file=stderr)
    return 0


def main(event_name: str) -> int:
    if event_name == WIRED:  # reads no event: the sub-agent hook that runs when this fails still has it on stdin
        return 0 if wired(os.environ) else 1
    return run(event_name, sys.stdin, sys.stderr, os.environ)


if __name__ == "__main__":  # run as a file, with no site: see the module's docstring
    sys.exit(main(sys.argv[1]) if len(sys.argv) == 2 and sys.argv[1] in (*EVENTS, WIRED) else 2)
