"""Bounds on raw HTTP connections, which uvicorn accepts before any ASGI app can see them.

uvicorn itself bounds none of these. ``timeout_keep_alive`` is armed only once a response
is complete, so a connection that never sends a byte, or stops halfway through its request
(a WebSocket upgrade included), is held for ever. ``limit_concurrency`` answers 503 only
after a whole request head has arrived, and ``h11_max_incomplete_event_size`` bounds a
head's size, not its time. ``guarded_http`` extends uvicorn's h11 protocol with three
rules. A request must arrive whole (head and body) within ``request_timeout`` of its first
byte, or of the connection, else it gets 408 and the connection closes. Over
``max_connections`` connections at once (HTTP and WebSocket), a new one gets 503. Over
``max_waiting`` connections waiting for their request, a new one gets 503 too.

Once the app is done with a WebSocket, uvicorn closes its transport gracefully, which waits for
the write buffer to drain: a peer that stopped reading would keep the socket, and the buffer,
for as long as its TCP stays up. ``guarded_websockets`` aborts such a socket ``linger`` seconds
after the app returned::

    uvicorn.run(app, http=guarded_http(request_timeout=5, max_connections=1000, max_waiting=100),
                ws=guarded_websockets(linger=2))
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger("easyjobs.manager")


REFUSAL_LINGER = 1.0
"""Seconds a refused connection is kept, its input discarded, so that the answer arrives
(closing with unread input would reset the connection and lose it)."""


def _answer(status: int, reason: str, text: str) -> bytes:
    body = f"{text}\n".encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)


def guarded_http(request_timeout: float, max_connections: int, max_waiting: int
                 ) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a request deadline and connection caps (pass as ``http=``)."""
    waiting: set[GuardedH11Protocol] = set()

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("refused a connection: over %d open", max_connections)
                self._refuse(503, "Service Unavailable",
                             f"this manager serves at most {max_connections} connections; "
                             "retry later")
            elif len(waiting) >= max_waiting:
                log.warning("refused a connection: %d waiting for their request", max_waiting)
                self._refuse(503, "Service Unavailable",
                             f"over {max_waiting} connections are waiting to send; retry later")
            else:
                self._arm()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # answered already: the rest of the request is not read
            if self._deadline is None:
                self._arm()  # the next request on a kept-alive connection
            super().data_received(data)
            if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                self._disarm()  # the request is in: the app has it

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self, event: h11.Request) -> None:
            self._disarm()  # the endpoint's own handshake deadline takes over
            super().handle_websocket_upgrade(event)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(request_timeout, self._timed_out)
            waiting.add(self)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            waiting.discard(self)

        def _timed_out(self) -> None:
            self._deadline = None
            waiting.discard(self)
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is not None and cycle.response_started and not cycle.response_complete:
                self.transport.close()  # the app is answering while the body still trickles
                return
            self._refuse(408, "Request Timeout",
                         f"the request did not arrive within {request_timeout:g}s")

        def _refuse(self, status: int, reason: str, text: str) -> None:
            """Answer, end our side, discard what comes and close after ``REFUSAL_LINGER``."""
            self._refused = True
            self.transport.write(_answer(status, reason, text))
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(REFUSAL_LINGER, self.transport.close)

    return GuardedH11Protocol


def guarded_websockets(linger: float) -> type[WebSocketsSansIOProtocol]:
    """uvicorn's WebSocket protocol, aborting a socket still open ``linger`` s after the app."""

    class GuardedWebSocketsProtocol(WebSocketsSansIOProtocol):
        _linger: asyncio.TimerHandle | None = None

        async def run_asgi(self) -> None:
            await super().run_asgi()
            if not self.disconnected:
                self._linger = self.loop.call_later(linger, self.transport.abort)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._linger is not None:
                self._linger.cancel()
            super().connection_lost(exc)

    return GuardedWebSocketsProtocol
