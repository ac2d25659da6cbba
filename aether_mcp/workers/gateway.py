"""The worker gateway: a loopback endpoint every proxied worker talks to instead of the proxy.

Which route (`wire.Lease`) a request takes is the router's to say; today a
worker's key, valid while it lives, stands for its lease. The gateway
forwards a route's requests to the caste's endpoint with the real
token, which therefore never enters a worker's environment, transcript or tool
output. On the way it records what each request asked for and what the proxy
says about who answered it (LiteLLM's `x-litellm-*` headers, the body's
`model`, the stream's usage), refuses a model that is neither the caste's nor
one of its declared fallbacks, and stops a worker that has spent its budget.
Only the routes Claude Code uses are passed on: with a worker's key, nothing
else of the proxy's (its key or admin API) can be reached with the real token.

Bodies pass byte for byte, and a streamed answer is forwarded event by event
as it arrives, never buffered whole. The one header changed besides the
credentials is `accept-encoding`: the gateway asks the upstream for plain
bytes so that it can read the usage in the stream it forwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import anyio

from ..errors import AetherError
from .upstream import Upstream, UpstreamError
from .wire import Lease, RequestRecord, Router, is_message

log = logging.getLogger("aether_mcp")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# (method, path, headers, JSON fields) -> (status, JSON answer): a caller's own paths, answered by the gateway.
Control = Callable[[str, str, dict[str, str], dict[str, Any] | None], tuple[int, dict[str, Any]]]
CONTROL_PREFIX = "/aether-mcp/"

HOST = "127.0.0.1"
BACKLOG = 2048  # uvicorn's own default: connections a colony's workers open at once wait here, not refused
# The routes Claude Code uses; HEAD (to check the endpoint is up) only on the endpoint itself and on these paths.
ROUTES = frozenset({("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens"), ("GET", "/v1/models")})
HEAD_PATHS = frozenset({"", *(path for _, path in ROUTES)})
# Request-body keys the Messages API does not have and a proxy acts on: LiteLLM reroutes a request that carries
# them (to another model, deployment or address) past the gateway's model check. Claude Code sends none of them.
REROUTING = frozenset(
    {
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "mock_testing_fallbacks",
        "mock_response",
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "user_config",
        "model_list",
        "litellm_params",
        "deployment_id",
    }
)
METADATA_KEYS = frozenset({"user_id"})  # what the Messages API's metadata holds; LiteLLM reads more from it
MAX_BODY = 32 * 1024 * 1024  # a request the CLI sends: conversation, tools, images
MAX_JSON_ANSWER = 8 * 1024 * 1024  # a non-streamed answer kept to read its usage
MAX_REQUEST_COST = 10_000.0  # US dollars: past this, a cost header is not a cost
MAX_TOKEN_COUNT = 1_000_000_000  # tokens of one request: past this, a usage count is not one
# Of a model's window, what a prompt may fill before the gateway asks Claude Code to compact (the rest is kept
# for the answer). Claude Code compacts and retries on Anthropic's own "prompt is too long" error.
CONTEXT_FILL = 0.9
MAX_SSE_LINE = 1024 * 1024  # a streamed answer's line kept to read its usage (a message_start is a few hundred bytes)
_LINE_END = re.compile(rb"\r\n|\r|\n")
# Not passed on: the hop's own framing, the credentials (replaced), and compression (so usage can be read).
DROPPED_REQUEST = frozenset(
    {"host", "authorization", "x-api-key", "content-length", "transfer-encoding", "connection", "accept-encoding"}
)
DROPPED_RESPONSE = frozenset({"connection", "keep-alive", "transfer-encoding"})
LITELLM = {
    "x-litellm-model-id": "model_id",
    "x-litellm-model-api-base": "api_base",
    "x-litellm-model-group": "model_group",
}


class Gateway:
    """The loopback server. Which route each request takes is its router's to say; it forwards, records and
    keeps the route's budget."""

    def __init__(self, router: Router, control: Control | None = None, host: str = HOST) -> None:
        self._router = router
        self.host = host  # loopback, unless a Ray cluster's nodes must reach it
        self._control = control  # answers CONTROL_PREFIX paths itself (a wrapped session's hooks), if given
        self._upstreams: dict[str, Upstream] = {}
        self._server: Any = None  # uvicorn's, once serving
        self._listener: socket.socket | None = None
        self.url: str | None = None

    def bind(self) -> str:
        """Listen on the gateway's host (a free port); the URL workers use. Requests that come before the gateway serves
        (`start`) wait in the socket's backlog: a caller can hand the URL out first and load uvicorn after."""
        if self.url is not None:
            return self.url
        try:
            self._listener = _listen(self.host)
        except OSError as exc:
            raise AetherError(
                f"The worker gateway could not start on {self.host} ({type(exc).__name__}: {exc})",
                "See the server's log; the spawn can be tried again",
            ) from None
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self._listener.getsockname()[1]}"
        return self.url

    def start(self, group: Any) -> str:
        """Listen (see `bind`) and serve in `group`; returns the URL workers use. Started once: later calls return
        the same URL.

        The socket is bound and listening before uvicorn takes it: the port is known at once, and a worker that
        connects before uvicorn accepts waits in the backlog, so nothing waits for the server to come up."""
        url = self.bind()
        if self._server is not None or self._listener is None:
            return url
        import uvicorn  # with the gateway's first use: loaded while a wrapped command starts

        from ..bounded_http import BoundedH11Protocol

        config = uvicorn.Config(
            self.app,
            log_level="warning",
            log_config=None,  # the server's own logging (stderr) stays as it is
            lifespan="off",
            interface="asgi3",
            proxy_headers=False,
            backlog=BACKLOG,
            http=BoundedH11Protocol,  # a header timeout and a connection limit: idle sockets hold nothing for long
        )
        self._server = _quiet_server(config)
        group.start_soon(self._serve, self._server, self._listener)
        return url

    async def _serve(self, server: Any, listener: socket.socket) -> None:
        try:
            await server.serve(sockets=[listener])
        except Exception:  # the gateway failing must not take the MCP server (the colony's task group) down with it
            log.exception("The worker gateway on %s stopped", self.url)

    async def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        elif self._listener is not None:  # bound, never served
            self._listener.close()
        for upstream in self._upstreams.values():
            await upstream.aclose()

    # --- the ASGI app ----------------------------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await _read_body(receive)
        if body is None:
            await _error(send, 413, "request_too_large", f"aether-mcp gateway: a request may be at most {MAX_BODY:,}")
            return
        fields = _json_fields(body)  # parsed once: the route, the model and the options are read from one parse
        if self._control is not None and scope["path"].startswith(CONTROL_PREFIX):
            status, answer = self._control(scope["method"], scope["path"], headers, fields)
            await _json(send, status, answer)
            return
        lease = self._router.route(headers, fields)
        if lease is None:
            await _error(send, 401, "authentication_error", "aether-mcp gateway: this key is not (or no longer) valid")
            return
        path = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
        asked = _asked_model(fields)
        sent = lease.send_model if lease.send_model is not None and asked is not None else asked
        record = RequestRecord(scope["method"], path, sent, asked_model=asked if sent != asked else None)
        if sent != asked and sent is not None and fields is not None:
            body = _with_model(body, fields, sent)
        lease.records.append(record)
        lease.changed()
        one_at_a_time = lease.turn if lease.budgeted and is_message(path) else contextlib.nullcontext()
        try:
            async with one_at_a_time:
                await self._pass(lease, record, headers, body, fields, wire=(receive, send))
        finally:
            lease.changed()

    async def _pass(
        self,
        lease: Lease,
        record: RequestRecord,
        headers: dict[str, str],
        body: bytes,
        fields: dict[str, Any] | None,
        *,
        wire: tuple[Receive, Send],
    ) -> None:
        """Refuse the request, or forward it and record how that went."""
        receive, send = wire
        refusal = self._refusal(lease, record, fields, body)
        if refusal is not None:
            record.refused, record.status = (None if record.compaction_asked else refusal[2]), refusal[0]
            await _error(send, *refusal)
            return
        began = time.perf_counter()
        async with anyio.create_task_group() as group:
            # A worker that is killed drops its connection: its upstream request is closed at once.
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            await self._forward(lease, record, headers, body, send)
            group.cancel_scope.cancel()
        if record.duration_s is None:  # cancelled before the upstream answered
            record.duration_s = time.perf_counter() - began
            record.refused = "dropped: the worker closed its connection before the answer came"

    def _refusal(
        self, lease: Lease, record: RequestRecord, fields: dict[str, Any] | None, body: bytes
    ) -> tuple[int, str, str] | None:
        route = (record.method, record.path.split("?", maxsplit=1)[0].rstrip("/"))
        if route not in ROUTES and not (record.method == "HEAD" and route[1] in HEAD_PATHS):
            # Only what the CLI asks for: a proxy's other routes (LiteLLM's /key/generate, /chat/completions)
            # would let a worker act with the real token, or spend past its budget unseen.
            return (403, "permission_error", f"aether-mcp gateway: {route[0]} {route[1]} is not a route workers use")
        rerouting = _rerouting(fields) if record.method == "POST" and fields is not None else None
        if rerouting is not None:
            return (400, "invalid_request_error", f"aether-mcp gateway: {rerouting} is not passed on to the proxy")
        if is_message(record.path) and lease.models is not None and record.model is None:
            return (400, "invalid_request_error", "aether-mcp gateway: the request's model cannot be read")
        if record.model is not None and lease.models is not None and record.model not in lease.models:
            allowed = ", ".join(lease.models)
            return (
                400,
                "invalid_request_error",
                f"aether-mcp gateway: model '{record.model}' is not the {lease.caste} caste's model or one of its "
                f"declared fallbacks ({allowed})",
            )
        if is_message(record.path) and lease.context_window is not None:
            estimate = lease.prompt_estimate(len(body))
            limit = int(lease.context_window * CONTEXT_FILL)
            if estimate is not None and estimate > limit:
                lease.context_seen = None  # the compaction request that follows goes through
                record.compaction_asked = True
                return (400, "invalid_request_error", f"prompt is too long: {estimate} tokens > {limit} maximum")
        if is_message(record.path):
            spent = lease.over_budget()
            if spent is not None:
                lease.budget_exceeded = True
                return (429, "budget_exceeded", f"aether-mcp gateway: the worker's budget is spent: {spent}")
        return None

    async def _forward(
        self, lease: Lease, record: RequestRecord, headers: dict[str, str], body: bytes, send: Send
    ) -> None:
        began = time.perf_counter()
        # x-litellm-* (tags route a request to other deployments) is the proxy's to set, not a worker's.
        outgoing = [(k, v) for k, v in headers.items() if k not in DROPPED_REQUEST and not k.startswith("x-litellm-")]
        if lease.token:
            # The kind of credential the route names, else the kind the worker used, with the real token in it.
            kind = lease.credential or ("x-api-key" if "x-api-key" in headers else "authorization")
            outgoing.append(("x-api-key", lease.token) if kind == "x-api-key" else (kind, f"Bearer {lease.token}"))
        upstream = self._upstreams.get(lease.upstream)
        if upstream is None:
            upstream = self._upstreams[lease.upstream] = Upstream(lease.upstream)
        try:
            answer = await upstream.send(record.method, record.path, outgoing, body)
        except UpstreamError as exc:  # the upstream's failure is the worker's answer, not the server's
            record.status, record.refused = 502, f"upstream unreachable: {exc}"
            record.duration_s = time.perf_counter() - began
            await _error(
                send,
                502,
                "api_error",
                f"aether-mcp gateway: {_whose(lease, record)} endpoint {lease.upstream} did not answer ({exc}). "
                "Fix: start it (or point the profile's proxy.endpoint at one that runs), then try again; "
                "`aether-mcp doctor` checks it.",
            )
            return
        if answer.status in (401, 403):
            # The endpoint refused the real token: its own words would send the user after the session's key.
            await answer.body.aclose()
            record.status, record.duration_s = answer.status, time.perf_counter() - began
            await _error(
                send,
                answer.status,
                "authentication_error",
                f"aether-mcp gateway: {lease.upstream} refused the token aether-mcp holds for {_whose(lease, record)} "
                f"requests (HTTP {answer.status}). Fix: set the right proxy.auth_token (or the caste's auth_token) "
                "in the profile; `aether-mcp doctor` checks it.",
            )
            return
        told = {k.decode("latin-1"): v.decode("latin-1") for k, v in answer.headers}
        usage = _UsageReader(told.get("content-type", ""))
        try:
            record.status = answer.status
            record.ttfb_s = time.perf_counter() - began
            _read_headers(record, told)
            passed = [(k, v) for k, v in answer.headers if k.decode("latin-1") not in DROPPED_RESPONSE]
            await send({"type": "http.response.start", "status": answer.status, "headers": passed})
            try:
                async for chunk in answer.body:
                    usage.feed(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamError as exc:
                # The upstream broke off mid-answer. The answer stays unfinished, so uvicorn drops the worker's
                # connection too, and the worker sees what it would have seen.
                record.refused = f"the upstream broke off mid-answer ({exc})"
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            with anyio.CancelScope(shield=True):
                await answer.body.aclose()  # a worker killed mid-answer closes its upstream request here
            record.duration_s = time.perf_counter() - began
            usage.finish(record)
            if record.status == 200 and is_message(record.path):
                prompt = record.input_tokens + record.cache_read_tokens + record.cache_write_tokens
                lease.context_seen = (prompt + record.output_tokens, len(body))
            if record.cost_usd is None and not record.cost_unreadable:
                prices = lease.prices.get(record.model or "")
                record.cost_usd = prices.cost(record) if prices is not None else None
            lease.count(record)


def _listen(host: str) -> socket.socket:
    """A listening socket on `host` and a free port. Its protocol is named: asyncio turns Nagle's algorithm off
    (TCP_NODELAY) only on connections of a socket whose protocol is TCP, and with it on, each small request
    waited 40 ms for the peer's delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.bind((host, 0))
        listener.listen(BACKLOG)
    except OSError:
        listener.close()
        raise
    return listener


def _quiet_server(config: Any) -> Any:
    """uvicorn's server without its signal handlers: the MCP server's own SIGTERM handler must stay in charge."""
    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer(config)


class _UsageReader:
    """Reads the model and token counts from an answer as it passes, streamed (SSE) or whole (JSON).

    Server-sent events are read as the standard says: a line ends with CRLF, LF or CR, an event ends with a
    blank line, and its data is its `data:` lines joined. A line longer than MAX_SSE_LINE is not kept (no
    usage is that long), so a stream cannot make the reader hold it whole."""

    def __init__(self, content_type: str) -> None:
        self.streamed = "text/event-stream" in content_type
        self.buffer = bytearray()
        self.data: list[bytes] = []  # the data lines of the event being read
        self.overlong = False  # the line being read passed MAX_SSE_LINE: dropped up to its end
        self.found: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> None:
        if not self.streamed:
            if len(self.buffer) < MAX_JSON_ANSWER:
                self.buffer += chunk
            return
        self.buffer += chunk
        while (end := _LINE_END.search(self.buffer)) is not None:
            if end.group() == b"\r" and end.end() == len(self.buffer):
                break  # it may be the first half of a CRLF
            line = bytes(self.buffer[: end.start()])
            del self.buffer[: end.end()]
            if self.overlong:
                self.overlong = False
            else:
                self._line(line)
        if len(self.buffer) > MAX_SSE_LINE:
            self.buffer.clear()
            self.overlong = True

    def _line(self, line: bytes) -> None:
        if not line:
            event, self.data = b"\n".join(self.data), []
            if b"message_start" in event or b"message_delta" in event:
                self._event(event)
        elif line.startswith(b"data:"):
            value = line[5:]
            self.data.append(value[1:] if value.startswith(b" ") else value)

    def _event(self, event: bytes) -> None:
        try:
            data = json.loads(event)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        message = data.get("message") if data.get("type") == "message_start" else None
        if isinstance(message, dict):
            self.found["model"] = message.get("model")
            self._usage(message.get("usage"))
        elif data.get("type") == "message_delta":
            self._usage(data.get("usage"))
            delta = data.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.found["stop_reason"] = delta["stop_reason"][:40]

    def _usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            # Counts a budget is kept by: whole, not negative, of a size a request can have.
            self.found.update({k: v for k, v in usage.items() if type(v) is int and 0 <= v <= MAX_TOKEN_COUNT})

    def finish(self, record: RequestRecord) -> None:
        if not self.streamed and self.buffer:
            try:
                data = json.loads(bytes(self.buffer))
            except ValueError:
                data = None
            if isinstance(data, dict):
                self.found["model"] = data.get("model")
                self._usage(data.get("usage"))
                if isinstance(data.get("stop_reason"), str):
                    self.found["stop_reason"] = data["stop_reason"][:40]
        model = self.found.get("model")
        record.answered_model = model if isinstance(model, str) else None
        record.stop_reason = self.found.get("stop_reason")
        record.input_tokens = self.found.get("input_tokens", 0)
        record.output_tokens = self.found.get("output_tokens", 0)
        record.cache_read_tokens = self.found.get("cache_read_input_tokens", 0)
        record.cache_write_tokens = self.found.get("cache_creation_input_tokens", 0)


def _read_headers(record: RequestRecord, headers: Any) -> None:
    for header, name in LITELLM.items():
        value = headers.get(header)
        if value:
            setattr(record, name, value)
    fallbacks = headers.get("x-litellm-attempted-fallbacks")
    if fallbacks and fallbacks.isdigit() and len(fallbacks) <= 3:
        record.attempted_fallbacks = int(fallbacks)
    cost = headers.get("x-litellm-response-cost")
    if cost:
        # A cost the proxy told but that cannot be a cost (nan, -5, 1e400) is not replaced by prices: it is
        # unknown, and a dollar budget ends on an unknown cost rather than lapse.
        record.cost_usd = _cost(cost)
        record.cost_unreadable = record.cost_usd is None


def _cost(text: str) -> float | None:
    """A request's cost in US dollars from the proxy's header: finite, not negative, at most MAX_REQUEST_COST."""
    try:
        value = float(text[:64])
    except ValueError:
        return None
    return value if 0 <= value <= MAX_REQUEST_COST else None  # NaN fails this too


def _json_fields(body: bytes) -> dict[str, Any] | None:
    """The body as the proxy reads it: JSON, whatever the content type, the last of a repeated key winning;
    None when it is no JSON object."""
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _whose(lease: Lease, record: RequestRecord) -> str:
    """Whose request it is, in words: the caste's and its model, or the session's."""
    model = f" (model {record.model})" if record.model else ""
    return f"the {lease.caste} caste's{model}" if lease.caste else f"this session's{model}"


_LEADING_MODEL = re.compile(rb'\A\s*\{\s*"model"\s*:\s*("(?:[^"\\]|\\.)*")')


def _with_model(body: bytes, fields: dict[str, Any], sent: str) -> bytes:
    """The body with its model replaced. Claude Code writes `model` first: that string alone is replaced, every
    other byte kept; any other layout is written again from its parse. (A body naming `model` twice would keep
    its second at the proxy: the answer then names the asked model, and the proof says so.)"""
    found = _LEADING_MODEL.match(body)
    if found is not None and json.loads(found.group(1)) == fields.get("model"):
        return body[: found.start(1)] + json.dumps(sent).encode() + body[found.end(1) :]
    return json.dumps({**fields, "model": sent}, ensure_ascii=False, separators=(",", ":")).encode()


def _asked_model(fields: dict[str, Any] | None) -> str | None:
    model = fields.get("model") if fields is not None else None
    return model if isinstance(model, str) else None


def _rerouting(data: dict[str, Any]) -> str | None:
    """The first option in a request body that would make the proxy route it elsewhere, named; None when there is
    none."""
    forbidden = sorted(set(data) & REROUTING)
    if forbidden:
        return f"the request option '{forbidden[0]}'"
    metadata = data.get("metadata")
    extra = sorted(set(metadata) - METADATA_KEYS) if isinstance(metadata, dict) else []
    return f"metadata key '{extra[0]}'" if extra else None


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """uvicorn says `http.disconnect` when the worker's connection is gone (or the answer is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _read_body(receive: Receive) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            return None
        if not message.get("more_body"):
            return bytes(body)


async def _error(send: Send, status: int, kind: str, message: str) -> None:
    await _json(send, status, {"type": "error", "error": {"type": kind, "message": message}})


async def _json(send: Send, status: int, answer: dict[str, Any]) -> None:
    data = json.dumps(answer).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})
