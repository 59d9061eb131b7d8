"""The WebSocket endpoint: one thin pump per connection between Starlette and ``ServerSession``.

Read a message, feed the session, give the frames to the core, send what the session wants
sent. Protocol rules live in the session and the core, not here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import ConnectionLost, EasyJobsError, ProtocolError
from ..protocol.auth import new_nonce
from ..protocol.frames import Frame, Hello
from ..protocol.session import (
    CLOSE_BACKLOG,
    CLOSE_GOING_AWAY,
    CLOSE_GRACE,
    CLOSE_INTERNAL_ERROR,
    CLOSE_PROTOCOL_ERROR,
    ServerSession,
    State,
)
from ..ticker import Ticker
from .core import Core
from .peers import Peer

log = logging.getLogger("easyjobs.manager")


class WebSocketPeer(Peer):
    """A peer on a WebSocket: frames go into its session and wake its writer."""

    def __init__(self, session: ServerSession, wake: asyncio.Event, peer_id: str,
                  drop: Callable[[Peer], None]) -> None:
        super().__init__(peer_id, session.name, session.role)
        self.session = session
        self._wake = wake
        self._drop = drop

    def send(self, frame: Frame) -> None:
        try:
            self.session.send(frame)
        except ConnectionLost:
            # Closing: ``disconnect`` cleans up what this peer was owed. A peer that stopped
            # reading is dropped now, its jobs requeued, though its socket may linger.
            if self.session.close_code == CLOSE_BACKLOG:
                self._drop(self)
            return
        self._wake.set()


class Endpoint:
    """Serves ``/ws/jobs`` for one manager; ``close_all`` ends every connection on shutdown."""

    def __init__(self, core: Core, secret: bytes, heartbeat: float, max_message: int,
                 handshake_timeout: float = 10.0) -> None:
        self._core = core
        self._secret = secret
        self._heartbeat = heartbeat
        self._max_message = max_message
        self._handshake_timeout = handshake_timeout
        self._open: dict[ServerSession, asyncio.Event] = {}
        self._closing = False

    def close_all(self) -> None:
        """Close every connection with 1001 (peers reconnect to the next manager)."""
        self._closing = True
        for session, wake in self._open.items():
            session.close(CLOSE_GOING_AWAY, "manager shutting down")
            wake.set()

    async def serve(self, websocket: WebSocket) -> None:
        """Run one connection from handshake to close."""
        if self._closing:
            await websocket.close(CLOSE_GOING_AWAY)
            return
        await websocket.accept()
        loop = asyncio.get_running_loop()
        session_id = secrets.token_hex(8)
        session = ServerSession(
            self._secret, loop.time(), nonce=new_nonce(), session_id=session_id,
            heartbeat=self._heartbeat, max_message=self._max_message,
            handshake_timeout=self._handshake_timeout,
        )
        wake = asyncio.Event()
        wake.set()
        self._open[session] = wake
        writer = loop.create_task(self._write(websocket, session, wake))
        ticker = Ticker(session, wake.set)
        peer: WebSocketPeer | None = None
        try:
            while session.state is not State.CLOSED:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:
                    session.fail(CLOSE_PROTOCOL_ERROR,
                                 ProtocolError("text messages are not allowed"))
                    break
                frames = session.receive(data, loop.time())
                if frames and isinstance(frames[0], Hello):
                    peer = WebSocketPeer(session, wake, session_id, self._core.disconnect)
                    self._core.connect(peer)
                    log.info("%s %r connected", peer.role, peer.name)
                    frames = frames[1:]
                    ticker.reschedule()
                if peer is not None and frames:
                    try:
                        self._core.handle(peer, frames)
                    except ProtocolError as exc:
                        session.fail(CLOSE_PROTOCOL_ERROR, exc)
                    except Exception:  # a bug of ours: this peer goes, everyone else stays
                        log.exception("internal error handling frames from %r", peer.name)
                        session.fail(CLOSE_INTERNAL_ERROR, EasyJobsError("internal error"))
                wake.set()
            if session.error is not None:
                log.warning("closing connection %s: %s", session_id, session.error)
        except WebSocketDisconnect:
            pass
        finally:
            if peer is not None:
                self._core.disconnect(peer)
                log.info("%s %r disconnected", peer.role, peer.name)
            if session.state is not State.CLOSED:
                writer.cancel()  # the socket is gone: nothing more can be sent on it
            wake.set()
            # The writer sends what is left and closes; a peer that stopped reading gets
            # CLOSE_GRACE seconds, not for ever.
            await asyncio.wait({writer}, timeout=CLOSE_GRACE)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            ticker.cancel()
            self._open.pop(session, None)

    async def _write(self, websocket: WebSocket, session: ServerSession,
                     wake: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await wake.wait()
                wake.clear()
                for message in session.data_to_send(loop.time()):
                    await websocket.send_bytes(message)
                if session.state is State.CLOSED:
                    await websocket.close(session.close_code or CLOSE_GOING_AWAY,
                                          session.close_reason)
                    return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the peer went away first
