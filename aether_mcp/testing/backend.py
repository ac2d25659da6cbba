"""A small Anthropic-compatible endpoint on loopback, for tests and the demo.

It stands where an LLM (or a LiteLLM proxy) would: Claude Code workers talk
to it with no API key and no network, and it records which model every
request asked for, which is what lets the tests and the demo prove routing.
By default it answers ``served-by <model>``; it can also play scripted turns
(a tool call, several in one message, then text), make the calls that tool
results name (a parent following its hook's advice), answer each model after a
delay of its own, claim to be another model than the one asked for, check a
token, or fail on purpose.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Call:
    """One tool call of a scripted answer."""

    tool: str
    tool_input: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Turn:
    """One scripted answer: text, a call of `tool` with `tool_input`, or several `calls` in one message.

    A `follow` turn makes the calls that the last message's tool results name, a line
    `mcp__<server>__<tool> {json arguments}` each, all in one message, round after round (so it stays first in
    the script); once they name none it answers with every tool result. `otherwise` is what it plays instead
    when the first tool results it reads name no call (the parent doing what prose advice says)."""

    text: str | None = None
    tool: str | None = None
    tool_input: dict[str, Any] = field(default_factory=dict)
    calls: tuple[Call, ...] = ()
    follow: bool = False
    otherwise: Turn | None = None
    think_s: float = 0.0  # how long the model takes over this turn, beyond its model's delay

    def tool_calls(self) -> tuple[Call, ...]:
        return (Call(self.tool, self.tool_input),) if self.tool else self.calls


MAX_FOLLOWS = 8  # rounds of named calls one follow turn makes: a tool result naming itself cannot loop forever
TASK_NOTICE = "<task-notification>"
NAMED_CALL = re.compile(r"\b(mcp__[A-Za-z0-9_-]+)[ \t]+(?=\{)")


@dataclass(frozen=True)
class Recorded:
    """What one request asked for. The token itself is never kept."""

    method: str
    path: str
    model: str | None = None
    stream: bool = False
    authorized: bool = True
    tool_names: tuple[str, ...] = ()
    conversation: tuple[str, ...] = ()  # the text of each message the request carried, in order
    system: str = ""  # the system prompt's text
    size: int = 0  # the request body's bytes
    agent_id: str | None = None  # Claude Code's x-claude-code-agent-id header: set on a sub-agent's requests
    session_id: str | None = None  # Claude Code's x-claude-code-session-id header: one per CLI process
    header_names: tuple[str, ...] = ()  # the request's header names, lower case (their values are not kept)
    at: float = 0.0  # when it arrived: seconds on the backend's clock (`LocalBackend.clock`)
    # (tool, bytes of its input as compact JSON) for each tool call in the conversation's assistant messages
    written: tuple[tuple[str, int], ...] = ()


class LocalBackend:
    """An Anthropic Messages API endpoint in a background thread, on 127.0.0.1 and a free port."""

    def __init__(
        self,
        *,
        token: str | None = None,
        claims: dict[str, str] | None = None,
        scripts: dict[str, list[Turn]] | None = None,
        models: list[str] | None = None,
        fail_status: int | None = None,
        close_mid_stream: bool = False,
        line_end: str = "\n",
        delay_s: float = 0.0,
        delays: dict[str, float] | None = None,
        gather: int = 0,
        port: int = 0,
        answer_headers: dict[str, str] | None = None,
        before_answer: Callable[[Recorded], None] | None = None,
    ) -> None:
        self.token = token
        self.claims = dict(claims or {})
        self.scripts = {model: deque(turns) for model, turns in (scripts or {}).items()}
        # model -> the turn that answers every task (a request whose last message is not a tool result):
        # each of many parallel workers gets it once, in whatever order their requests come.
        self.on_task: dict[str, Turn] = {}
        self.models = list(models or [])
        self.fail_status = fail_status
        self.overloaded: set[str] = set()  # models that answer 529 overloaded, as a provider at capacity does
        self.close_mid_stream = close_mid_stream
        self.line_end = line_end  # how a streamed answer ends its lines: "\n", "\r\n" or "\r", as SSE allows
        self.delay_s = delay_s
        self.delays = dict(delays or {})  # model -> seconds before each of its answers, in place of delay_s
        # Sent with every answer, as a proxy's own headers are (LiteLLM's x-litellm-response-cost, say).
        self.answer_headers = dict(answer_headers or {})
        # Called with each Messages request before it is answered: a test holds an answer until what it needs
        # is ready (a session's MCP server up, say), rather than racing it.
        self.before_answer = before_answer
        self.started = time.monotonic()
        self._follows: dict[str, int] = {}
        # Hold each Messages request until this many are in flight (at most gather_timeout_s): side-by-side
        # workers then meet here even on a machine too loaded to start them within one delay_s of each other.
        self.gather = gather
        self.gather_timeout_s = 5.0
        self.requests: list[Recorded] = []
        self.in_flight = 0
        self.max_in_flight = 0  # the most Messages requests served at once: a check on concurrency limits
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LocalBackend:
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-backend", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LocalBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def clock(self) -> float:
        """Seconds since the backend was made: the clock of `Recorded.at`."""
        return time.monotonic() - self.started

    def models_asked(self) -> list[str]:
        """The model of every Messages request, in arrival order."""
        with self._lock:
            return [r.model for r in self.requests if r.path.startswith("/v1/messages") and r.model]

    def record(self, entry: Recorded) -> None:
        with self._lock:
            self.requests.append(entry)

    def enter(self) -> None:
        with self._arrived:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._arrived.notify_all()

    def wait_for_company(self) -> None:
        """Hold a request until `gather` requests are in flight, or `gather_timeout_s` passes."""
        if self.gather > 1:
            with self._arrived:
                self._arrived.wait_for(lambda: self.in_flight >= self.gather, timeout=self.gather_timeout_s)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def next_turn(self, model: str, body: dict[str, Any] | None = None) -> Turn | None:
        """The model's next scripted turn for this request, or None for the default answer."""
        with self._lock:
            queue = self.scripts.get(model)
            if not queue:
                return None
            if not queue[0].follow:
                return queue.popleft()
            named = named_calls(_last_results(body or {}))
            if named and self._follows.get(model, 0) < MAX_FOLLOWS:
                self._follows[model] = self._follows.get(model, 0) + 1
                queue[0] = Turn(follow=True)  # `otherwise` is for the first results only
                return Turn(calls=named)
            turn = queue.popleft()
            self._follows.pop(model, None)
            if turn.otherwise is not None:
                queue.appendleft(Turn(follow=True))
            return turn.otherwise


def named_calls(texts: list[str]) -> tuple[Call, ...]:
    """The calls the texts name, in order, each once: `mcp__server__tool` and a JSON object on the same line;
    in a text that is a JSON object (a structured tool result), in its string values too."""
    found: list[Call] = []
    decoder = json.JSONDecoder()
    lines = "\n".join(texts).splitlines() + [value for text in texts for value in _strings_of(text)]
    for line in lines:
        for match in NAMED_CALL.finditer(line):
            try:
                arguments, _ = decoder.raw_decode(line, match.end())
            except json.JSONDecodeError:
                continue
            call = Call(match.group(1), arguments) if isinstance(arguments, dict) else None
            if call is not None and call not in found:
                found.append(call)
    return tuple(found)


def _handler_for(backend: LocalBackend) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `requests` instead
            pass

        def do_HEAD(self) -> None:
            backend.record(Recorded("HEAD", self.path, at=backend.clock()))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            authorized = self._authorized()
            backend.record(Recorded("GET", self.path, authorized=authorized, at=backend.clock()))
            if not authorized:
                return self._error(401, "authentication_error", "invalid x-api-key or bearer token")
            if self.path.split("?")[0] == "/v1/models":
                data = [{"type": "model", "id": m, "display_name": m} for m in backend.models]
                return self._json(200, {"data": data, "has_more": False})
            self._json(200, {"status": "ok"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                return self._error(400, "invalid_request_error", "body is not JSON")
            authorized = self._authorized()
            model = body.get("model")
            tools = tuple(t.get("name", "") for t in body.get("tools") or [] if isinstance(t, dict))
            messages = body.get("messages") if isinstance(body.get("messages"), list) else []
            said = tuple(_text_of(m.get("content")) for m in messages if isinstance(m, dict))
            recorded = Recorded(
                "POST",
                self.path,
                model,
                bool(body.get("stream")),
                authorized,
                tools,
                said,
                system=_text_of(body.get("system")),
                size=len(raw),
                agent_id=self.headers.get("x-claude-code-agent-id"),
                session_id=self.headers.get("x-claude-code-session-id"),
                header_names=tuple(name.lower() for name in self.headers),
                at=backend.clock(),
                written=_written(messages),
            )
            backend.record(recorded)
            if not authorized:
                return self._error(401, "authentication_error", "invalid x-api-key or bearer token")
            if not self.path.startswith("/v1/messages"):
                return self._error(404, "not_found_error", f"no route {self.path}")
            if "count_tokens" in self.path:
                return self._json(200, {"input_tokens": _tokens(body)})
            if backend.before_answer is not None:
                backend.before_answer(recorded)
            backend.enter()
            try:
                self._messages(body)
            finally:
                backend.leave()

        def _messages(self, body: dict[str, Any]) -> None:
            backend.wait_for_company()
            delay = backend.delays.get(str(body.get("model")), backend.delay_s)
            if delay:
                time.sleep(delay)
            if str(body.get("model")) in backend.overloaded:
                return self._error(529, "overloaded_error", f"{body.get('model')} is overloaded")
            if backend.fail_status:
                kind = "overloaded_error" if backend.fail_status == 529 else "api_error"
                return self._error(backend.fail_status, kind, f"scripted failure {backend.fail_status}")
            message = _answer(backend, body)
            if body.get("stream"):
                self._stream(message)
            elif backend.close_mid_stream:  # cut the body short too, so a non-streaming retry cannot recover
                data = json.dumps(message).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True
            else:
                self._json(200, message, backend.answer_headers)

        def _authorized(self) -> bool:
            if backend.token is None:
                return True
            bearer = self.headers.get("Authorization", "")
            return bearer == f"Bearer {backend.token}" or self.headers.get("x-api-key") == backend.token

        def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, kind: str, message: str) -> None:
            self._json(status, {"type": "error", "error": {"type": kind, "message": message}})

        def _stream(self, message: dict[str, Any]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            for name, value in backend.answer_headers.items():
                self.send_header(name, value)
            self.end_headers()
            events = list(_events(message))
            if backend.close_mid_stream:
                events = events[: len(events) // 2]
            end = backend.line_end
            for name, data in events:
                self.wfile.write(f"event: {name}{end}data: {json.dumps(data)}{end}{end}".encode())
                self.wfile.flush()
            self.close_connection = True

    return Handler


def _answer(backend: LocalBackend, body: dict[str, Any]) -> dict[str, Any]:
    asked = str(body.get("model") or "")
    served = backend.claims.get(asked, asked)
    fresh = backend.on_task.get(asked) if _answers_a_task(body) else None
    turn = fresh or backend.next_turn(asked, body) or Turn(text=_default_text(served, body))
    if turn.think_s:
        time.sleep(turn.think_s)
    calls = turn.tool_calls()
    blocks: list[dict[str, Any]] = [
        {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": c.tool, "input": c.tool_input}
        for c in calls
    ] or [{"type": "text", "text": turn.text or ""}]
    return {
        "id": f"msg_{uuid.uuid4().hex[:20]}",
        "type": "message",
        "role": "assistant",
        "model": served,
        "content": blocks,
        "stop_reason": "tool_use" if calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": _tokens(body), "output_tokens": 8},
    }


def _default_text(served: str, body: dict[str, Any]) -> str:
    """`served-by <model>`, followed by every tool result in the conversation (a scripted parent reports them),
    and every notice of a finished background task (how Claude Code hands back a sub-agent it ran in the
    background)."""
    blocks = [
        block
        for message in body.get("messages") or []
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict)
    ]
    results = [_text_of(b.get("content")) for b in blocks if b.get("type") == "tool_result"]
    notices = [str(b["text"]) for b in blocks if b.get("type") == "text" and TASK_NOTICE in str(b.get("text"))]
    return (
        f"served-by {served}"
        + "".join(f"\n\ntool result:\n{r}" for r in results)
        + "".join(f"\n\ntask notification:\n{n}" for n in notices)
    )


def _strings_of(text: str) -> list[str]:
    """The top-level string values of `text` when it is a JSON object; none otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []
    return [v for v in value.values() if isinstance(v, str)] if isinstance(value, dict) else []


def _last_results(body: dict[str, Any]) -> list[str]:
    """The text of each tool result in the last user message: what the model just got back from its calls."""
    users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    content = users[-1].get("content") if users else None
    blocks = content if isinstance(content, list) else []
    return [_text_of(b.get("content")) for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]


def _written(messages: list[Any]) -> tuple[tuple[str, int], ...]:
    """Each tool call the model wrote in the conversation: its name and the bytes of its input as compact JSON."""
    return tuple(
        (str(block.get("name")), _json_bytes(block.get("input")))
        for message in messages
        if isinstance(message, dict) and message.get("role") == "assistant" and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_use"
    )


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _answers_a_task(body: dict[str, Any]) -> bool:
    """True when the last message is the user's own words, not the result of a tool the model called."""
    # The CLI may end with a message of its own (role "system"): the conversation is users and assistants.
    said = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") in ("user", "assistant")]
    last = said[-1] if said else {}
    content = last.get("content")
    blocks = content if isinstance(content, list) else []
    return last.get("role") == "user" and not any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks
    )


def _text_of(content: Any) -> str:
    """The text in a message's content, tool results' included."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part for part in content if isinstance(part, dict)]
        return "\n".join(
            _text_of(part.get("content")) if part.get("type") == "tool_result" else str(part.get("text", ""))
            for part in parts
        )
    return ""


def _tokens(body: dict[str, Any]) -> int:
    return max(1, len(json.dumps(body.get("messages", []))) // 4)


def _events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The server-sent events of one streamed message, as the Messages API sends them."""
    start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            opening = {**block, "input": {}}
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    usage = {"output_tokens": message["usage"]["output_tokens"]}
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    yield "message_delta", {"type": "message_delta", "delta": stop, "usage": usage}
    yield "message_stop", {"type": "message_stop"}


def main(argv: list[str] | None = None) -> int:
    """`python -m aether_mcp.testing.backend`: serve until interrupted, printing each model asked for."""
    parser = argparse.ArgumentParser(prog="python -m aether_mcp.testing.backend", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", help="require this bearer token or x-api-key")
    parser.add_argument("--model", action="append", default=[], help="a model GET /v1/models lists (repeatable)")
    args = parser.parse_args(argv)
    backend = LocalBackend(token=args.token, models=args.model, port=args.port).start()
    print(f"listening on {backend.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        backend.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
