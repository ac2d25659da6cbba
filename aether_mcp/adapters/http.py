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


def load_token(path: Path | None) -> tuple[str, Path]:
    """The token in `path`, or in the default file (made, 0600, on first use); a file others can read is refused."""
    if path is None:
        folder = user_config_dir()
        path = folder / "http-token"
        if not path.exists():
            write_private(path, folder, (secrets.token_urlsafe(32) + "\n").encode())
    try:
        info = path.stat()
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AetherError(
            f"Cannot read the token file {path}: {exc.strerror}", "Give --token-file a readable file"
        ) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AetherError(
            f"The token file {path} can be read by other users", f"Run: chmod 600 {shlex.quote(str(path))}"
        )
    if len(token) < 16:
        raise AetherError(f"The token in {path} is {len(token)} characters", "Use at least 16 random characters")
    return token, path


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


def bearer_guard(app: ASGIApp, token: str) -> ASGIApp:
    """`app`, answering 401 to every HTTP request without `Authorization: Bearer <token>`."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
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
