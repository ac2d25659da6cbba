"""The gateway's way to the proxy: HTTP/1.1 over kept-alive connections, each answer streamed as it arrives.

A small client on h11 rather than a general one: the gateway needs one method
(send a request, stream the answer's bytes back untouched), and every layer a
general client adds sits on every request every worker makes.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import h11
from anyio.abc import ByteStream

READ = 65536
CONNECT_TIMEOUT_S = 10.0
IDLE_KEPT = 16  # connections kept per upstream for the next request


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
        self._idle: list[tuple[ByteStream, h11.Connection]] = []

    async def _connect(self, fresh: bool = False) -> tuple[ByteStream, h11.Connection, bool]:
        """A connection, kept from an earlier request unless `fresh`; and whether it was kept."""
        while self._idle and not fresh:
            kept, connection = self._idle.pop()
            if connection.our_state is h11.IDLE and connection.their_state is h11.IDLE:
                return kept, connection, True
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
        return stream, h11.Connection(h11.CLIENT), False

    async def send(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        """Send one request; the answer's body is read as the caller iterates it (and must be iterated or
        closed). A kept connection the upstream has closed meanwhile is replaced, once, by a fresh one."""
        stream, connection, kept = await self._connect()
        request = h11.Request(
            method=method,
            target=self.prefix + target,
            headers=[("host", self.authority), *headers, ("content-length", str(len(body)))],
        )
        while True:
            try:
                data = (
                    connection.send(request)
                    + connection.send(h11.Data(data=body))
                    + connection.send(h11.EndOfMessage())
                )
                await stream.send(data)
                while True:
                    event = await _next(stream, connection)
                    if isinstance(event, h11.Response):
                        return Answer(event.status_code, list(event.headers), self._body(stream, connection))
            except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, h11.ProtocolError) as exc:
                await _close(stream)
                if not kept:
                    raise UpstreamError(f"{self.authority} did not answer: {type(exc).__name__}") from None
                stream, connection, kept = await self._connect(fresh=True)
            except BaseException:
                await _close(stream)  # cancelled (the worker went away): the upstream request ends here
                raise

    async def _body(self, stream: ByteStream, connection: h11.Connection) -> AsyncGenerator[bytes, None]:
        finished = False
        try:
            while True:
                try:
                    event = await _next(stream, connection)
                except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, h11.ProtocolError) as exc:
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
                    self._idle.append((stream, connection))
                else:
                    await stream.aclose()
            else:
                await _close(stream)  # unfinished: the connection cannot carry another request

    async def aclose(self) -> None:
        while self._idle:
            stream, _ = self._idle.pop()
            await stream.aclose()


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
            data = await stream.receive(READ)
        except anyio.EndOfStream:
            data = b""
        connection.receive_data(data)
