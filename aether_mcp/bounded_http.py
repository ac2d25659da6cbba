"""uvicorn's HTTP/1.1 protocol with bounds on what an idle or half-open connection can hold.

uvicorn waits for a request's headers as long as the peer likes and takes any
number of connections: 1,100 that send half a request line and stop held
every descriptor of a common 1,024 soft limit, and the workers' own requests
timed out. Here a connection must finish its request's headers within
HEADER_TIMEOUT_S of its first byte (or of connecting), and past
MAX_CONNECTIONS a new connection is closed at once. Both the gateway and the
HTTP server use it.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0  # a request's line and headers, from its first byte: the CLI sends them in one write
MAX_CONNECTIONS = 512  # open at once: a colony of 64 workers opens a few each; a half of 1,024 descriptors


class BoundedH11Protocol(H11Protocol):
    """H11Protocol that closes a connection whose request headers do not arrive in time, or one too many."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > MAX_CONNECTIONS:
            transport.close()
            return
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # part of a request line or its headers, or nothing yet
            self._await_headers()
        else:
            self._headers_arrived()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        if self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._headers_late)

    def _headers_arrived(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
