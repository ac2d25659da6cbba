"""Serving MCP over streamable HTTP: a bearer token on every request, explicit hosts, loopback unless asked.

Over HTTP the server is reachable by every local user, and by any web page
through DNS rebinding if Host and Origin go unchecked; a worker it starts runs
with the user's rights. So every request needs the token, the Host and Origin
headers must name this server, and a non-loopback address is refused unless
the user says --allow-remote.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import shlex
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import AetherError
from ..private_files import user_config_dir, write_private

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

PATH = "/mcp"


PERSON_HEADER = b"x-aether-person"  # set by the guard, for the owner of each worker; never taken from a client
_PERSON = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MIN_TOKEN = 16


def load_tokens(path: Path | None) -> tuple[dict[str, str], Path]:
    """Token -> person, from `path` or the default file (made, 0600, on first use); a file others can read is
    refused. The file holds one bare token (one person, unnamed), or one `NAME TOKEN` a line, a person each:
    people sharing one server see, read and stop only their own workers."""
    if path is None:
        folder = user_config_dir()
        path = folder / "http-token"
        if not path.exists():
            write_private(path, folder, (secrets.token_urlsafe(32) + "\n").encode())
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AetherError(
            f"Cannot read the token file {path}: {exc.strerror}", "Give --token-file a readable file"
        ) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AetherError(
            f"The token file {path} can be read by other users", f"Run: chmod 600 {shlex.quote(str(path))}"
        )
    lines = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip() and line[0] != "#"]
    if len(lines) == 1 and len(lines[0][1]) == 1:
        return {_token(lines[0][1][0], path, lines[0][0]): ""}, path
    tokens: dict[str, str] = {}
    for number, words in lines:
        if len(words) != 2 or not _PERSON.fullmatch(words[0]):
            raise AetherError(
                f"Line {number} of the token file {path} is not `NAME TOKEN` (a name of letters, digits, '.', "
                "'_', '-' or '@', then the token)",
                "Give each person a line of their own",
            )
        name, token = words[0], _token(words[1], path, number)
        if token in tokens or name in tokens.values():
            raise AetherError(
                f"Line {number} of the token file {path} repeats a name or a token", "Give each their own"
            )
        tokens[token] = name
    if not tokens:
        raise AetherError(f"The token file {path} holds no token", "Put one in it, or one `NAME TOKEN` a line")
    return tokens, path


def _token(token: str, path: Path, line: int) -> str:
    if len(token) < MIN_TOKEN:
        raise AetherError(
            f"The token on line {line} of {path} is {len(token)} characters", f"Use at least {MIN_TOKEN} random ones"
        )
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> None:
    if not is_loopback(host) and not allow_remote:
        raise AetherError(
            f"--host {host} is not a loopback address: other machines could reach the server, and through it "
            "run workers with your rights",
            "Serve on 127.0.0.1, or pass --allow-remote if that is what you want (the bearer token still applies)",
        )


def allowed_hosts(host: str, port: int, extra: list[str]) -> list[str]:
    """The Host header values this server answers to: its own address (and the loopback names), and `extra`."""
    names = ["127.0.0.1", "localhost", "[::1]"] if is_loopback(host) else [host]
    return [f"{name}:{port}" for name in [*names, *extra]]


def bearer_guard(app: ASGIApp, tokens: dict[str, str]) -> ASGIApp:
    """`app`, answering 401 to every HTTP request without `Authorization: Bearer <token>` for a known token; the
    request goes on naming the token's person (PERSON_HEADER), whatever the client sent in that header."""
    expected = [(f"Bearer {token}".encode(), person.encode()) for token, person in tokens.items()]

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != PERSON_HEADER]
            given = dict(headers).get(b"authorization", b"")
            # Every token compared, in constant time each: which one matched shows in no timing.
            matches = [person for bearer, person in expected if hmac.compare_digest(given, bearer)]
            if not matches:
                body = b'{"error": "unauthorized", "error_description": "a bearer token is required"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b'Bearer realm="aether-mcp"'),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            scope = {**scope, "headers": [*headers, (PERSON_HEADER, matches[0])]}
        await app(scope, receive, send)

    return guarded


def registration_line(host: str, port: int, token_file: Path) -> str:
    """The `claude mcp add` line for this server; the token is read from its file, never printed."""
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}{PATH}"
    header = f'"Authorization: Bearer $(cat {shlex.quote(str(token_file))})"'
    return f"claude mcp add --transport http aether {url} --header {header}"


def announce(host: str, port: int, token_file: Path) -> None:
    print(f"aether-mcp on http://{host}:{port}{PATH}; register it with:", file=sys.stderr)
    print(f"  {registration_line(host, port, token_file)}", file=sys.stderr, flush=True)
