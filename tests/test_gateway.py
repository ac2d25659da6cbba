"""The worker gateway: workers talk to it with keys of their own, never with the proxy's token."""

from __future__ import annotations

import errno
import json
import re
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import TOKEN, stdio_server, structured, trusted, wait_for, write_profile
from mcp import Client

from aether_mcp.testing.backend import LocalBackend, Turn
from aether_mcp.workers.proof import ENDPOINT

pytestmark = pytest.mark.anyio


@dataclass
class Through:
    """A gateway on loopback holding one lease: its address, the lease's key, a client to send with."""

    url: str
    key: str
    client: Any


@asynccontextmanager
async def through_gateway(lease: Any) -> AsyncIterator[Through]:
    import anyio
    import httpx2

    from aether_mcp.workers.gateway import Gateway
    from aether_mcp.workers.wire import KeyRouter

    router = KeyRouter()

    gateway = Gateway(router)
    async with anyio.create_task_group() as group, httpx2.AsyncClient(timeout=30) as client:
        url = gateway.start(group)
        yield Through(url, router.issue(lease).value, client)
        await gateway.close()
        group.cancel_scope.cancel()


# What the scripted builder runs through Bash: its environment, then a request of its own for another model.
PROBE = (
    "env; "
    + sys.executable
    + ' -c "import os, urllib.request as u\n'
    + "r = u.Request(os.environ['ANTHROPIC_BASE_URL'] + '/v1/messages', method='POST', "
    + 'data=b\'{\\"model\\": \\"glm-5\\", \\"max_tokens\\": 5, \\"messages\\": []}\', '
    + "headers={'authorization': 'Bearer ' + os.environ['ANTHROPIC_AUTH_TOKEN'], 'content-type': 'application/json'})\n"
    + "try: u.urlopen(r)\nexcept Exception as e: print('PROBE', e.code, e.read().decode())\""
)


def post(url: str, key: str, model: str) -> tuple[int, str]:
    body = json.dumps({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}).encode()
    request = urllib.request.Request(
        url + "/v1/messages", data=body, headers={"authorization": f"Bearer {key}", "content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_a_worker_sees_its_own_key_and_never_the_token(isolated: Path) -> None:
    script = {"kimi-k2.5": [Turn(tool="Bash", tool_input={"command": PROBE})]}
    with LocalBackend(token=TOKEN, models=["kimi-k2.5", "glm-5"], scripts=script) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url)
        async with Client(stdio_server(isolated)) as client:
            result = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "look around"}))
            said = "\n".join(r.conversation[-1] for r in backend.requests if r.conversation)
            key = re.search(r"ANTHROPIC_AUTH_TOKEN=(\S+)", said)
            base = re.search(r"ANTHROPIC_BASE_URL=(\S+)", said)
            assert key is not None and base is not None
            # once the worker has ended, its key is refused for everything, while the gateway still serves
            status, answer = post(base.group(1), key.group(1), "kimi-k2.5")
        assert key is not None and key.group(1).startswith("aether-")
        assert base is not None and base.group(1).startswith("http://127.0.0.1:") and backend.url not in said
        assert TOKEN not in said and TOKEN not in Path(result["transcript_path"]).read_text()
        # the proxy got the real token on every request it saw, and never a request for the other model
        assert backend.requests and all(r.authorized for r in backend.requests)
        assert "glm-5" not in backend.models_asked()
        # while the worker lived, its key could not ask for another model
        assert "PROBE 400" in said
        assert "model 'glm-5' is not the builder caste's model or one of its declared fallbacks (kimi-k2.5)" in said
    assert status == 401 and "not (or no longer) valid" in answer
    assert result["routing_verified"] is False  # it asked for a model that is not its own
    assert [(m["code"], m["asked"]) for m in result["routing_mismatches"]] == [("refused", "glm-5")]
    assert result["requests"] == 3  # the task, the tool result, and the refused probe


async def test_a_worker_is_verified_by_what_the_gateway_saw(isolated: Path) -> None:
    with LocalBackend(token=TOKEN, models=["kimi-k2.5"]) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url)
        async with Client(stdio_server(isolated)) as client:
            result = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "say hi"}))
    assert (result["status"], result["routing_verified"]) == ("succeeded", True)
    assert result["routing_mismatches"] == []
    assert result["requests_by_model"] == {"kimi-k2.5": 1}
    assert result["requests_by_deployment"] == {ENDPOINT: 1}  # the local backend names no deployment
    assert result["requests"] == 1
    assert result["tokens"]["input"] > 0 and result["tokens"]["output"] == 8
    assert result["cost_usd"] is None  # no cost header, no prices in model_metadata: unknown, and said so
    log = json.loads((isolated / ".aether" / "spawn-log.jsonl").read_text().splitlines()[-1])
    assert (log["requests"], log["tokens"], log["served_by"], log["fallback_used"]) == (1, result["tokens"], [], [])


PRICES = "model_metadata:\n  kimi-k2.5: {input_cost_per_mtok: 1.0, output_cost_per_mtok: 5.0}\n"


@pytest.mark.parametrize(
    ("limit", "extra"),
    [({"max_tokens": 100}, ""), ({"max_budget_usd": 0.001}, PRICES)],
    ids=["max_tokens", "max_budget_usd"],
)
async def test_a_worker_ends_one_request_after_its_budget(isolated: Path, limit: dict[str, float], extra: str) -> None:
    script = {"kimi-k2.5": [Turn(tool="Bash", tool_input={"command": "true"})]}
    with LocalBackend(token=TOKEN, models=["kimi-k2.5"], scripts=script) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url, extra)
        async with Client(stdio_server(isolated)) as client:
            arguments = {"caste": "builder", "task": "work", **limit}
            result = structured(await client.call_tool("spawn_worker", arguments))
        asked = [r for r in backend.requests if r.method == "POST" and "count_tokens" not in r.path]
    assert result["status"] == "budget_exceeded", result["error"]
    assert "reached its budget" in result["error"] and "refused its next request" in result["error"]
    assert len(asked) == 1  # the request that reached the budget went through; the next one did not
    assert result["requests"] >= 2
    if "max_budget_usd" in limit:
        assert result["cost_usd"] is not None and result["cost_usd"] >= 0.001


async def test_a_declared_fallback_serves_an_overloaded_model(isolated: Path) -> None:
    fallback = "workers:\n  castes:\n    builder: {fallback_models: [glm-5]}\n"
    with LocalBackend(token=TOKEN, models=["kimi-k2.5", "glm-5"]) as backend:
        backend.overloaded.add("kimi-k2.5")
        write_profile(isolated / "model-profiles.yaml", backend.url, fallback)
        async with Client(stdio_server(isolated)) as client:
            result = structured(await client.call_tool("spawn_worker", {"caste": "builder", "task": "say hi"}))
    assert result["status"] == "succeeded", result["error"]
    assert result["fallback_used"] == ["glm-5"]
    assert result["routing_verified"] is True
    assert result["requests_by_model"]["glm-5"] == 1
    assert "kimi-k2.5" in backend.models_asked() and backend.models_asked()[-1] == "glm-5"


def test_costs_per_caste_and_model(isolated: Path) -> None:
    log = isolated / ".aether" / "spawn-log.jsonl"
    log.parent.mkdir()
    entries = [
        ("builder", "kimi-k2.5", 3, {"input": 1000, "output": 10}, 0.002, True, "2026-11-20T10:00:00+00:00"),
        ("builder", "kimi-k2.5", 2, {"input": 500, "output": 5}, None, False, "2026-11-26T10:00:00+00:00"),
        ("scout", "glm-5", 1, {"input": 100, "output": 1}, 0.01, True, "2026-11-26T11:00:00+00:00"),
    ]
    log.write_text(
        "".join(
            json.dumps(
                {"caste": c, "model": m, "requests": r, "tokens": t, "cost_usd": cost, "routing_verified": v}
                | {"finished_at": at}
            )
            + "\n"
            for c, m, r, t, cost, v, at in entries
        )
        + "not json\n"
    )
    table = run_cli("costs", cwd=isolated)
    assert table.splitlines() == [
        "CASTE    MODEL      WORKERS  REQUESTS  TOKENS  COST                  VERIFIED",
        "scout    glm-5      1        1         101     $0.0100               100%",
        "builder  kimi-k2.5  2        5         1,515   $0.0020 (+1 unknown)  50%",
    ]
    rows = json.loads(run_cli("costs", "--json", "--since", "2026-11-25", cwd=isolated))["rows"]
    assert [(r["caste"], r["workers"], r["cost_unknown"], r["share_verified"]) for r in rows] == [
        ("scout", 1, 0, 1.0),
        ("builder", 1, 1, 0.0),
    ]


def run_cli(*args: str, cwd: Path) -> str:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "aether_mcp", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


class _Echo:
    """An upstream that keeps the bytes it got and answers in two SSE events, the second only once the client
    has the first: a gateway that buffered the answer whole would never deliver it."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[tuple[str, str, bytes]] = []
        self.credentials: list[tuple[str | None, str | None]] = []
        self.first_seen = threading.Event()
        echo = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                echo.received.append(("HEAD", self.path, b""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                echo.received.append(("POST", self.path, body))
                echo.credentials.append((self.headers.get("x-api-key"), self.headers.get("authorization")))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(FIRST)
                self.wfile.flush()
                echo.first_seen.wait(10)
                self.wfile.write(SECOND)
                self.wfile.flush()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


FIRST = b'event: message_start\ndata: {"type": "message_start", "message": {"model": "kimi-k2.5", "usage": {"input_tokens": 7}}}\n\n'
SECOND = b'event: message_delta\ndata: {"type": "message_delta", "usage": {"output_tokens": 3}}\n\n\xf0\x9f\x90\x9c bytes as they are\n'


async def test_bodies_pass_byte_for_byte_and_events_as_they_arrive() -> None:
    import anyio
    import httpx2

    from aether_mcp.workers.gateway import Gateway
    from aether_mcp.workers.wire import KeyRouter, Lease

    echo = _Echo()
    router = KeyRouter()
    gateway = Gateway(router)
    lease = Lease("w", "builder", echo.url, "sk-real", ("kimi-k2.5",))
    sent = (
        b'{"model": "kimi-k2.5", "stream": true, "messages": [{"role": "user", "content": "caf\\u00e9 \xe2\x98\x95"}]}'
    )
    async with anyio.create_task_group() as group:
        url = gateway.start(group)
        key = router.issue(lease).value
        headers = {"x-api-key": key, "content-type": "application/json"}
        async with httpx2.AsyncClient(timeout=20) as client:
            got = b""
            async with client.stream("POST", url + "/v1/messages?beta=true", content=sent, headers=headers) as answer:
                async for chunk in answer.aiter_raw():
                    got += chunk
                    if FIRST in got:
                        echo.first_seen.set()  # only now does the upstream send the second event
            head = await client.head(url + "/v1/models", headers=headers)
        await gateway.close()
        group.cancel_scope.cancel()
    echo.server.shutdown()
    assert got == FIRST + SECOND
    assert echo.received[0] == ("POST", "/v1/messages?beta=true", sent)
    assert echo.credentials == [("sk-real", None)]  # the kind of header the worker used, with the real token
    assert echo.received[1][:2] == ("HEAD", "/v1/models") and head.status_code == 200
    record = lease.records[0]
    assert (record.model, record.status, record.answered_model) == ("kimi-k2.5", 200, "kimi-k2.5")
    assert (record.input_tokens, record.output_tokens) == (7, 3)


async def test_a_worker_that_goes_away_closes_its_upstream_request() -> None:
    """The upstream takes 5 s to answer; the client leaves after 0.3 s, and so does the gateway's request."""
    import anyio
    import httpx2

    from aether_mcp.workers.gateway import Gateway
    from aether_mcp.workers.wire import KeyRouter, Lease

    with LocalBackend(token=TOKEN, models=["kimi-k2.5"], delay_s=5) as backend:
        router = KeyRouter()
        gateway = Gateway(router)
        lease = Lease("w", "builder", backend.url, TOKEN, ("kimi-k2.5",))
        body = b'{"model": "kimi-k2.5", "max_tokens": 5, "stream": true, "messages": []}'
        async with anyio.create_task_group() as group:
            url = gateway.start(group)
            key = router.issue(lease).value
            async with httpx2.AsyncClient() as client:
                with anyio.move_on_after(0.3):
                    await client.post(url + "/v1/messages", content=body, headers={"authorization": f"Bearer {key}"})
            assert await wait_for(lambda: lease.records and lease.records[0].refused is not None, seconds=5)
            record = lease.records[0]
            await gateway.close()
            group.cancel_scope.cancel()
    assert record.refused == "dropped: the worker closed its connection before the answer came"
    assert record.duration_s is not None and record.duration_s < 2


async def test_a_gateway_that_cannot_start_fails_the_spawn_not_the_server(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aether_mcp.adapters.server import build_server
    from aether_mcp.profile.store import ProfileStore
    from aether_mcp.workers import gateway

    def cannot_bind(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EADDRINUSE, "Address already in use")

    monkeypatch.setattr(gateway, "_listen", cannot_bind)
    with LocalBackend(token=TOKEN, models=["kimi-k2.5"]) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url)
        async with Client(build_server(ProfileStore())) as client:
            refused = await client.call_tool("spawn_worker", {"caste": "builder", "task": "say hi"})
            assert refused.is_error
            assert "The worker gateway could not start on 127.0.0.1 (OSError: [Errno" in refused.content[0].text
            assert "Address already in use)" in refused.content[0].text
            assert not (await client.call_tool("get_caste_model", {})).is_error  # the server goes on
        assert not [r for r in backend.requests if r.method == "POST"]


def test_the_model_is_read_as_the_proxy_reads_it() -> None:
    from aether_mcp.workers.gateway import _asked_model, _json_fields

    def asked(body: bytes) -> str | None:
        return _asked_model(_json_fields(body))

    assert asked(b'{"model": "kimi-k2.5", "max_tokens": 5, "model": "glm-5"}') == "glm-5"  # the last wins
    assert asked(b'{"messages": [], "model": "glm-5"}') == "glm-5"
    assert asked(b"not json") is None


async def test_only_the_routes_workers_use_reach_the_proxy() -> None:
    """A worker's key cannot reach the proxy's other routes (LiteLLM's key and admin API) with the real token."""
    import anyio
    import httpx2

    from aether_mcp.workers.gateway import Gateway
    from aether_mcp.workers.wire import KeyRouter, Lease

    with LocalBackend(token=TOKEN, models=["kimi-k2.5"]) as backend:
        router = KeyRouter()
        gateway = Gateway(router)
        lease = Lease("w", "builder", backend.url, TOKEN, ("kimi-k2.5",))
        async with anyio.create_task_group() as group:
            url = gateway.start(group)
            key = router.issue(lease).value
            headers = {"authorization": f"Bearer {key}", "content-type": "text/plain"}
            async with httpx2.AsyncClient(timeout=20) as client:
                admin = await client.post(url + "/key/generate", content=b"{}", headers=headers)
                other = await client.post(
                    url + "/v1/chat/completions", content=b'{"model": "kimi-k2.5"}', headers=headers
                )
                hidden = await client.post(
                    url + "/v1/messages", content=b'{"model": "kimi-k2.5", "model": "glm-5"}', headers=headers
                )
                listed = await client.get(url + "/v1/models", headers=headers)
            await gateway.close()
            group.cancel_scope.cancel()
    assert (admin.status_code, other.status_code, hidden.status_code, listed.status_code) == (403, 403, 400, 200)
    assert "POST /key/generate is not a route workers use" in admin.text
    assert "model 'glm-5' is not the builder caste's model" in hidden.text
    assert [r.path for r in backend.requests] == ["/v1/models"]


async def test_max_tokens_without_a_proxy_is_refused(isolated: Path) -> None:
    from aether_mcp.adapters.server import build_server
    from aether_mcp.profile.store import ProfileStore

    (isolated / "model-profiles.yaml").write_text("worker_models: {builder: kimi-k2.5}\n")
    async with Client(build_server(ProfileStore())) as client:
        refused = await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi", "max_tokens": 10})
    assert refused.is_error
    assert "max_tokens is kept at the gateway" in refused.content[0].text


TCP_ESTABLISHED = "01"  # the state column of /proc/net/tcp


def tcp_established(local_port: int, remote_port: int) -> bool:
    """Whether this machine has an IPv4 TCP connection from `local_port` to `remote_port` that neither end has
    begun to close (one whose peer closed it is in CLOSE_WAIT)."""
    wanted = (local_port, remote_port, TCP_ESTABLISHED)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]  # addresses as hex IP:port
        if (int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state) == wanted:
            return True
    return False


async def test_a_kept_connection_the_proxy_closed_is_replaced() -> None:
    """Between two turns the proxy drops the idle connection the gateway kept: the next request still goes."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import anyio
    import httpx2

    from aether_mcp.workers.gateway import Gateway
    from aether_mcp.workers.wire import KeyRouter, Lease

    kept: list[socket.socket] = []
    answer = b'{"model": "kimi-k2.5", "usage": {"input_tokens": 1, "output_tokens": 1}}'

    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            kept.append(self.connection)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy_port = server.server_address[1]
    router = KeyRouter()
    gateway = Gateway(router)
    lease = Lease("w", "builder", f"http://127.0.0.1:{proxy_port}", TOKEN, ("kimi-k2.5",))
    body = b'{"model": "kimi-k2.5", "max_tokens": 5, "messages": []}'
    async with anyio.create_task_group() as group:
        url = gateway.start(group)
        key = router.issue(lease).value
        async with httpx2.AsyncClient(timeout=20) as client:
            first = await client.post(url + "/v1/messages", content=body, headers={"x-api-key": key})
            gateway_ends = [connection.getpeername()[1] for connection in kept]
            assert all(tcp_established(port, proxy_port) for port in gateway_ends)  # kept for the next turn
            for connection in kept:
                connection.shutdown(socket.SHUT_RDWR)  # the proxy's idle timeout
            # the close has reached the gateway's end of each kept connection before the next turn
            assert await wait_for(lambda: not any(tcp_established(port, proxy_port) for port in gateway_ends))
            second = await client.post(url + "/v1/messages", content=body, headers={"x-api-key": key})
        await gateway.close()
        group.cancel_scope.cancel()
    server.shutdown()
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.content == answer
    assert [r.status for r in lease.records] == [200, 200]


async def test_a_rogue_workers_key_reroutes_nothing() -> None:
    """Findings 4 and 5: with its own key, a worker's HEAD to another of the proxy's paths, a request option that
    LiteLLM would follow to another model or address, a metadata key it reads, or an x-litellm-tags header, never
    reaches the proxy as sent; the CLI's own requests (HEAD on the endpoint, metadata.user_id) still pass."""
    from aether_mcp.workers.wire import Lease

    with LocalBackend(token=TOKEN, models=["cheap"]) as backend:
        async with through_gateway(Lease("w", "builder", backend.url, TOKEN, ("cheap",))) as gateway:
            headers = {"authorization": f"Bearer {gateway.key}", "content-type": "application/json"}
            message = {"model": "cheap", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
            client, url = gateway.client, gateway.url
            peeked = await client.head(url + "/key/info?key=sk-someone-else", headers=headers)
            refused = {}
            for option, value in [
                ("fallbacks", ["pricey"]),
                ("api_base", "http://attacker.example"),
                ("mock_testing_fallbacks", True),
                ("user_config", {"model_list": []}),
                ("metadata", {"user_id": "u", "model_group": "pricey"}),
            ]:
                answer = await client.post(url + "/v1/messages", json={**message, option: value}, headers=headers)
                refused[option] = (answer.status_code, answer.text)
            up = await client.head(url + "/", headers=headers)
            tagged = {**headers, "x-litellm-tags": "pricey-only"}
            own = {**message, "metadata": {"user_id": "u"}}  # what Claude Code sends
            plain = await client.post(url + "/v1/messages", json=own, headers=tagged)
    assert peeked.status_code == 403
    assert {option: status for option, (status, _) in refused.items()} == dict.fromkeys(refused, 400)
    assert "the request option 'fallbacks' is not passed on" in refused["fallbacks"][1]
    assert "metadata key 'model_group' is not passed on" in refused["metadata"][1]
    assert (up.status_code, plain.status_code) == (200, 200)
    assert [(r.method, r.path.split("?")[0]) for r in backend.requests] == [("HEAD", "/"), ("POST", "/v1/messages")]
    assert "x-litellm-tags" not in backend.requests[-1].header_names


async def test_a_caste_with_no_model_is_refused_through_a_proxy(isolated: Path) -> None:
    """Finding 13: a worker through the proxy always has a model the gateway holds it to (a key for a caste with
    none would have allowed any model)."""
    from aether_mcp.adapters.server import build_server
    from aether_mcp.profile.store import ProfileStore

    with LocalBackend(token=TOKEN, models=["kimi-k2.5"]) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url, "model_slots: {inherit: null}\n")
        (isolated / "model-profiles.yaml").write_text(
            (isolated / "model-profiles.yaml").read_text().replace("  scout: glm-5\n", "  scout: inherit\n")
        )
        trusted(isolated / "model-profiles.yaml")
        async with Client(build_server(ProfileStore())) as client:
            refused = await client.call_tool("spawn_worker", {"caste": "scout", "task": "hi"})
            chosen = structured(
                await client.call_tool("spawn_worker", {"caste": "scout", "task": "hi", "model": "kimi-k2.5"})
            )
    assert refused.is_error
    assert "The scout caste has no model" in refused.content[0].text
    assert "aether-mcp caste-models set scout=MODEL" in refused.content[0].text
    assert chosen["status"] == "succeeded" and backend.models_asked() == ["kimi-k2.5"]


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
async def test_tokens_are_counted_however_the_stream_ends_its_lines(line_end: str) -> None:
    """Finding 12: an answer framed with CRLF counted 0 tokens, so budgets and costs lapsed."""
    from aether_mcp.workers.wire import Lease

    with LocalBackend(token=TOKEN, models=["kimi-k2.5"], line_end=line_end) as backend:
        lease = Lease("w", "builder", backend.url, TOKEN, ("kimi-k2.5",))
        async with through_gateway(lease) as gateway:
            body = {
                "model": "kimi-k2.5",
                "max_tokens": 5,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            }
            answer = await gateway.client.post(
                gateway.url + "/v1/messages", json=body, headers={"x-api-key": gateway.key}
            )
    assert answer.status_code == 200 and line_end + line_end in answer.text  # passed on byte for byte
    (record,) = lease.records
    assert (record.input_tokens > 0, record.output_tokens, record.answered_model) == (True, 8, "kimi-k2.5")


def test_the_stream_reader_splits_lines_anywhere_and_holds_no_overlong_line() -> None:
    """Finding 12, at the reader: a line end split across chunks, CRLF framing, and a line too long to hold."""
    from aether_mcp.workers.gateway import MAX_SSE_LINE, _UsageReader
    from aether_mcp.workers.wire import RequestRecord

    start = b'event: message_start\r\ndata: {"type": "message_start", "message": {"model": "m", "usage": '
    start += b'{"input_tokens": 7}}}\r\n\r\n'
    huge = b"data: " + b"x" * (2 * MAX_SSE_LINE) + b"\r\n\r\n"
    delta = b'event: message_delta\r\ndata: {"type": "message_delta", "usage": {"output_tokens": 3}}\r\n\r\n'
    reader = _UsageReader("text/event-stream")
    most = 0
    for i in range(0, len(start + huge + delta), 4096):
        reader.feed((start + huge + delta)[i : i + 4096])
        most = max(most, len(reader.buffer))
    for byte in delta:  # a CR at a chunk's end is held until the next chunk says whether an LF follows
        reader.feed(bytes([byte]))
    record = RequestRecord("POST", "/v1/messages", "m")
    reader.finish(record)
    assert (record.answered_model, record.input_tokens, record.output_tokens) == ("m", 7, 3)
    assert most <= MAX_SSE_LINE + 4096


async def test_a_dollar_budget_that_cannot_be_measured_is_refused_up_front(isolated: Path) -> None:
    """Finding 3: with no prices (and no cost header), max_budget_usd was never applied; with a price for the caste's
    model but none for its fallback, one answer of the fallback turned it off for good."""
    from aether_mcp.adapters.server import build_server
    from aether_mcp.profile.store import ProfileStore
    from aether_mcp.workers.wire import Lease, Prices, RequestRecord

    fallback = "workers:\n  castes:\n    builder: {fallback_models: [glm-5]}\n"
    with LocalBackend(token=TOKEN, models=["kimi-k2.5", "glm-5"]) as backend:
        write_profile(isolated / "model-profiles.yaml", backend.url)
        async with Client(build_server(ProfileStore())) as client:
            unpriced = await client.call_tool(
                "spawn_worker", {"caste": "builder", "task": "hi", "max_budget_usd": 1e-4}
            )
        write_profile(isolated / "model-profiles.yaml", backend.url, PRICES + fallback)
        async with Client(build_server(ProfileStore())) as client:
            half = await client.call_tool("spawn_worker", {"caste": "builder", "task": "hi", "max_budget_usd": 1e-4})
        assert not [r for r in backend.requests if r.method == "POST"]
    assert unpriced.is_error and "model_metadata has no prices for kimi-k2.5" in unpriced.content[0].text
    assert half.is_error and "model_metadata has no prices for glm-5," in half.content[0].text
    # and should an answer's cost be unknown all the same, the next request is refused, never let through
    lease = Lease("w", "builder", "http://x", None, ("a", "b"), prices={"a": Prices(1.0, 5.0)}, max_budget_usd=1.0)
    lease.count(RequestRecord("POST", "/v1/messages", "b", status=200, output_tokens=10))
    assert (
        lease.over_budget()
        == "an answer's cost was told by neither the proxy nor prices: its max_budget_usd cannot be kept"
    )


async def test_side_by_side_requests_cannot_overrun_a_budget() -> None:
    """Finding 2: a worker with max_tokens 40 sent 20 requests at once with its own key, and all reached the proxy
    (315 tokens). Each is checked against what the ones before it spent: at most one request's worth over."""
    import anyio

    from aether_mcp.workers.wire import Lease

    with LocalBackend(token=TOKEN, models=["kimi-k2.5"]) as backend:
        lease = Lease("w", "builder", backend.url, TOKEN, ("kimi-k2.5",), max_tokens=40)
        statuses: list[int] = []
        async with through_gateway(lease) as gateway:
            body = {"model": "kimi-k2.5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}

            async def one() -> None:
                answer = await gateway.client.post(
                    gateway.url + "/v1/messages", json=body, headers={"x-api-key": gateway.key}
                )
                statuses.append(answer.status_code)

            async with anyio.create_task_group() as wave:
                for _ in range(20):
                    wave.start_soon(one)
        reached = [r for r in backend.requests if r.method == "POST"]
    per_request = max(r.tokens for r in lease.records if r.refused is None)
    assert lease.spent_tokens <= 40 + per_request
    assert len(reached) == statuses.count(200) < 20 and statuses.count(429) == 20 - len(reached)


async def test_a_request_that_may_have_reached_the_proxy_is_never_sent_again() -> None:
    """Finding 11: a kept connection was retried after the request was written, so a proxy that closed it after
    reading the request got it (and billed it) twice. The worker gets the failure; its CLI decides to retry."""
    import socket
    import threading

    from aether_mcp.workers.wire import Lease

    answer = b'{"model": "kimi-k2.5", "usage": {"input_tokens": 1, "output_tokens": 1}}'
    seen: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def proxy() -> None:
        """Answers the first request and keeps the connection; reads the second, and hangs up on it."""
        connection, _ = listener.accept()
        with connection:
            for turn in range(2):
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(65536)
                head, _, rest = request.partition(b"\r\n\r\n")
                length = int(
                    next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(
                        b":"
                    )[1]
                )
                while len(rest) < length:
                    rest += connection.recv(65536)
                seen.append(head.split(b"\r\n")[0])
                if turn == 0:
                    connection.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        + f"content-length: {len(answer)}\r\n\r\n".encode()
                        + answer
                    )
        while True:  # any connection after that: the request sent again
            try:
                again, _ = listener.accept()
            except OSError:
                return
            with again:
                seen.append(again.recv(65536).split(b"\r\n")[0])

    threading.Thread(target=proxy, daemon=True).start()
    lease = Lease("w", "builder", f"http://127.0.0.1:{listener.getsockname()[1]}", TOKEN, ("kimi-k2.5",))
    body = b'{"model": "kimi-k2.5", "max_tokens": 5, "messages": []}'
    async with through_gateway(lease) as gateway:
        headers = {"x-api-key": gateway.key}
        first = await gateway.client.post(gateway.url + "/v1/messages", content=body, headers=headers)
        # a resend would happen inside this call, before its answer: nothing to wait for after it
        second = await gateway.client.post(gateway.url + "/v1/messages", content=body, headers=headers)
    listener.close()
    assert (first.status_code, second.status_code) == (200, 502)
    assert seen == [b"POST /v1/messages HTTP/1.1"] * 2  # once each, never again
