"""The gateway's way to the proxy: HTTP/1.1 over kept-alive connections, each answer streamed as it arrives.

A small client on h11 rather than a general one: the gateway needs one method
(send a request, stream the answer's bytes back untouched), and every layer a
general client adds sits on every request every worker makes.

As httpcore does, a kept connection is checked before it is reused (not read
from, not past its keep-alive), and a request that may have reached the proxy
is never sent again: a proxy that closes a connection after reading a request
would otherwise get (and bill) it twice. The worker's CLI retries on its own.
"""

from __future__ import annotations

import select
import ssl
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import h11
from anyio.abc import ByteStream, SocketAttribute

READ = 65536
CONNECT_TIMEOUT_S = 10.0
# Longer than the worker CLI's own wait for an answer (API_TIMEOUT_MS, 120 s by default), so the CLI decides first.
READ_TIMEOUT_S = 600.0
IDLE_KEPT = 16  # connections kept per upstream for the next request
KEEP_S = 4.0  # a kept connection's life: short of the keep-alive most servers allow (uvicorn's is 5 s)


class UpstreamError(Exception):
    """The upstream could not be reached, or broke off mid-answer."""


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: AsyncGenerator[bytes, None]


class Upstream:
    """One endpoint (scheme, host, port, path prefix) and its idle connections."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"not an http(s) URL: {base_url}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.authority = parts.netloc.rsplit("@", 1)[-1]
        self.prefix = parts.path.rstrip("/")
        self._idle: list[tuple[ByteStream, h11.Connection, float]] = []  # and when each was kept

    async def _connect(self) -> tuple[ByteStream, h11.Connection]:
        """A kept connection that is still good, else a new one."""
        while self._idle:
            kept, connection, since = self._idle.pop()
            idle = connection.our_state is h11.IDLE and connection.their_state is h11.IDLE
            if idle and time.monotonic() - since < KEEP_S and _quiet(kept):
                return kept, connection
            await kept.aclose()
        try:
            with anyio.fail_after(CONNECT_TIMEOUT_S):
                if self.tls:
                    stream: ByteStream = await anyio.connect_tcp(
                        self.host, self.port, tls=True, ssl_context=ssl.create_default_context(), tls_hostname=self.host
                    )
                else:
                    stream = await anyio.connect_tcp(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to {self.authority}: {exc}") from None
        return stream, h11.Connection(h11.CLIENT)

    async def send(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        """Send one request, once; the answer's body is read as the caller iterates it (and must be iterated or
        closed)."""
        stream, connection = await self._connect()
        request = h11.Request(
            method=method,
            target=self.prefix + target,
            headers=[("host", self.authority), *headers, ("content-length", str(len(body)))],
        )
        try:
            data = connection.send(request) + connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage())
            await stream.send(data)
            while True:
                event = await _next(stream, connection)
                if isinstance(event, h11.Response):
                    return Answer(event.status_code, list(event.headers), self._body(stream, connection))
        except (OSError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream, h11.ProtocolError) as exc:
            await _close(stream)
            raise UpstreamError(f"{self.authority} did not answer: {type(exc).__name__}") from None
        except BaseException:
            await _close(stream)  # cancelled (the worker went away): the upstream request ends here
            raise

    async def _body(self, stream: ByteStream, connection: h11.Connection) -> AsyncGenerator[bytes, None]:
        finished = False
        try:
            while True:
                try:
                    event = await _next(stream, connection)
                except (OSError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream, h11.ProtocolError) as exc:
                    raise UpstreamError(f"{self.authority} broke off mid-answer: {type(exc).__name__}") from None
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    finished = True
                    return
        finally:
            if finished and connection.our_state is h11.DONE and connection.their_state is h11.DONE:
                connection.start_next_cycle()
                if len(self._idle) < IDLE_KEPT:
                    self._idle.append((stream, connection, time.monotonic()))
                else:
                    await stream.aclose()
            else:
                await _close(stream)  # unfinished: the connection cannot carry another request

    async def aclose(self) -> None:
        while self._idle:
            stream, _, _ = self._idle.pop()
            await stream.aclose()


def _quiet(stream: ByteStream) -> bool:
    """Whether an idle kept connection has nothing to read: a peer that closed it (or spoke out of turn) makes
    it readable, and such a connection must not carry a request."""
    sock = stream.extra(SocketAttribute.raw_socket, None)  # noqa: S610 (anyio's typed attributes, not Django)
    if sock is None:
        return False
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


async def _close(stream: ByteStream) -> None:
    with anyio.CancelScope(shield=True):
        await stream.aclose()


async def _next(stream: ByteStream, connection: h11.Connection) -> object:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            if isinstance(event, h11.ConnectionClosed):
                raise anyio.EndOfStream
            return event
        try:
            with anyio.fail_after(READ_TIMEOUT_S):
                data = await stream.receive(READ)
        except anyio.EndOfStream:
            data = b""
        connection.receive_data(data)
