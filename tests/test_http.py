"""Streamable HTTP as another local user, a web page and a second session would try it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for, write_profile
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from aether_mcp.testing.backend import LocalBackend
from aether_mcp.testing.proxy import free_port

pytestmark = pytest.mark.anyio

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "probe", "version": "1"}},
}


@dataclass
class HttpServer:
    url: str
    token: str
    token_file: Path
    stderr: Path

    def client(self, token: str | None = None) -> Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        # The initialize handshake, as Claude Code does: it gives each client an MCP session of its own.
        transport = streamable_http_client(self.url, http_client=create_mcp_http_client(headers=headers))
        return Client(transport, mode="legacy")


def serve(cli_env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "aether_mcp", "serve", "--transport", "streamable-http", *args]
    return subprocess.Popen(command, env=cli_env, cwd=cwd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def http_server(isolated: Path, cli_env: dict[str, str], backend: LocalBackend) -> Iterator[HttpServer]:
    write_profile(isolated / "model-profiles.yaml", backend.url)
    port = free_port()
    log = isolated.parent / "server.log"
    env = {k: v for k, v in cli_env.items() if k != "XDG_CONFIG_HOME"}
    command = [sys.executable, "-m", "aether_mcp", "serve", "--transport", "streamable-http", "--port", str(port)]
    with log.open("wb") as err:
        process = subprocess.Popen(command, env=env, cwd=isolated, stdin=subprocess.DEVNULL, stderr=err)
    try:

        def listening() -> bool:
            with socket.socket() as attempt:
                return attempt.connect_ex(("127.0.0.1", port)) == 0

        assert anyio_run(wait_for, listening), log.read_text()
        token_file = Path(env["HOME"]) / ".config" / "aether-mcp" / "http-token"
        yield HttpServer(f"http://127.0.0.1:{port}/mcp", token_file.read_text().strip(), token_file, log)
    finally:
        process.terminate()
        process.wait(15)


def anyio_run(func: Any, *args: Any) -> Any:
    import anyio

    return anyio.run(func, *args)


def post(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(INITIALIZE).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_every_request_needs_the_token(http_server: HttpServer) -> None:
    assert post(http_server.url, {}) == 401
    assert post(http_server.url, {"Authorization": "Bearer not-the-token-at-all"}) == 401
    assert post(http_server.url, {"Authorization": f"Bearer {http_server.token}"}) == 200
    async with http_server.client() as client:
        table = (await client.call_tool("get_caste_model", {"caste": "scout"})).structured_content
        assert table is not None and table["castes"][0]["model"] == "glm-5"
    # the token file is the user's alone, and the registration line reads it rather than printing it
    assert http_server.token_file.stat().st_mode & 0o777 == 0o600
    said = http_server.stderr.read_text()
    assert f'--header "Authorization: Bearer $(cat {http_server.token_file})"' in said
    assert http_server.token not in said


async def test_a_page_through_dns_rebinding_is_refused(http_server: HttpServer, backend: LocalBackend) -> None:
    authorized = {"Authorization": f"Bearer {http_server.token}"}
    assert post(http_server.url, {**authorized, "Host": "attacker.example"}) in (400, 403, 421)
    assert post(http_server.url, {**authorized, "Origin": "http://attacker.example"}) in (400, 403)
    assert backend.models_asked() == []


async def test_sessions_see_read_and_stop_only_their_own_workers(
    http_server: HttpServer, backend: LocalBackend
) -> None:
    backend.delay_s = 3
    async with http_server.client() as alice, http_server.client() as bob:
        spawned = await alice.call_tool("spawn_worker", {"caste": "builder", "task": "hi", "wait": False})
        assert spawned.structured_content is not None
        worker_id = spawned.structured_content["worker_id"]
        assert (await bob.call_tool("list_workers", {})).structured_content == {
            "workers": [],
            "total": 0,
            "next_offset": None,
        }
        for tool in ("get_worker", "cancel_worker"):
            refused = await bob.call_tool(tool, {"worker_id": worker_id})
            assert refused.is_error
            assert refused.content[0].text.endswith(  # type: ignore[union-attr]
                f"No worker '{worker_id}' in this session. Its recent workers: none yet."
            )
        done = await alice.call_tool("get_worker", {"worker_id": worker_id, "wait_s": 60})
        assert done.structured_content is not None and done.structured_content["status"] == "succeeded"


def test_a_non_loopback_address_needs_allow_remote(isolated: Path, cli_env: dict[str, str]) -> None:
    process = serve(cli_env, isolated, "--host", "0.0.0.0", "--port", str(free_port()))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert err.decode().startswith("Error: --host 0.0.0.0 is not a loopback address")
    assert "pass --allow-remote" in err.decode()


def test_a_token_file_others_can_read_is_refused(isolated: Path, cli_env: dict[str, str]) -> None:
    token_file = isolated / "token"
    token_file.write_text("a-long-enough-token-for-the-test\n")
    token_file.chmod(0o644)
    process = serve(cli_env, isolated, "--port", str(free_port()), "--token-file", str(token_file))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"The token file {token_file} can be read by other users. Run: chmod 600 {token_file}." in err.decode()
    assert os.access(token_file, os.R_OK)  # untouched


async def test_people_sharing_one_server_see_and_stop_only_their_own_workers(
    isolated: Path, cli_env: dict[str, str], backend: LocalBackend
) -> None:
    """Finding 10: with the MCP SDK's default client (the sessionless 2026 protocol) two clients shared one owner,
    and one listed and cancelled the other's worker. A token file of `NAME TOKEN` lines makes each name a person;
    a person who sends another's name in the guard's header is still themselves."""
    write_profile(isolated / "model-profiles.yaml", backend.url)
    alice, bob = "alice-token-0123456789abcdef", "bob-token-0123456789abcdef"
    token_file = isolated.parent / "tokens"
    token_file.write_text(f"# who may use this server\nalice {alice}\nbob {bob}\n")
    token_file.chmod(0o600)
    port = free_port()
    process = serve(cli_env, isolated, "--port", str(port), "--token-file", str(token_file))
    url = f"http://127.0.0.1:{port}/mcp"

    def client(token: str, **extra: str) -> Client:  # the SDK's default: no MCP session
        headers = {"Authorization": f"Bearer {token}", **extra}
        return Client(streamable_http_client(url, http_client=create_mcp_http_client(headers=headers)))

    try:

        def listening() -> bool:
            with socket.socket() as attempt:
                return attempt.connect_ex(("127.0.0.1", port)) == 0

        assert await wait_for(listening)
        backend.delay_s = 3
        async with client(alice) as as_alice, client(bob, **{"x-aether-person": "alice"}) as as_bob:
            spawned = await as_alice.call_tool("spawn_worker", {"caste": "builder", "task": "hi", "wait": False})
            assert spawned.structured_content is not None
            worker_id = spawned.structured_content["worker_id"]
            seen = (await as_bob.call_tool("list_workers", {})).structured_content
            stopped = await as_bob.call_tool("cancel_worker", {"worker_id": worker_id})
            mine = (await as_alice.call_tool("list_workers", {})).structured_content
            done = (await as_alice.call_tool("get_worker", {"worker_id": worker_id, "wait_s": 60})).structured_content
    finally:
        process.terminate()
        process.wait(15)
    assert seen == {"workers": [], "total": 0, "next_offset": None}
    assert stopped.is_error and f"No worker '{worker_id}'" in stopped.content[0].text  # type: ignore[union-attr]
    assert mine is not None and [w["worker_id"] for w in mine["workers"]] == [worker_id]
    assert done is not None and done["status"] == "succeeded"


def test_a_token_file_names_a_person_a_line(tmp_path: Path) -> None:
    from aether_mcp.adapters.http import load_tokens
    from aether_mcp.errors import AetherError

    path = tmp_path / "tokens"
    for text, expected in [
        ("one-bare-token-of-24-chars\n", {"one-bare-token-of-24-chars": ""}),
        (
            "a tokenA-0123456789abcdef\nb tokenB-0123456789abcdef\n",
            {"tokenA-0123456789abcdef": "a", "tokenB-0123456789abcdef": "b"},
        ),
    ]:
        path.write_text(text)
        path.chmod(0o600)
        assert load_tokens(path)[0] == expected
    for text, problem in [
        ("a tokenA-0123456789abcdef\na tokenB-0123456789abcdef\n", "repeats a name or a token"),
        ("a short\n", "is 5 characters"),
        ("a b c\n", "is not `NAME TOKEN`"),
    ]:
        path.write_text(text)
        with pytest.raises(AetherError, match=problem) as refused:
            load_tokens(path)
        assert "tokenB-0123456789abcdef" not in str(refused.value)  # a token is never in an error
