"""The WebSocket endpoint: one thin pump per connection between Starlette and ``ServerSession``.

Read a message, feed the session, give the frames to the core, send what the session wants
sent. Protocol rules live in the session and the core, not here. The pump ends as soon as the
session closes, whichever way it closed, even while a read and a write are both stuck on a
half-dead link: the peer's jobs are requeued at once, not when the socket finally goes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..errors import AuthenticationError, ConnectionLost, EasyJobsError, ProtocolError
from ..protocol.auth import new_nonce
from ..protocol.frames import Frame, Hello
from ..protocol.session import (
    CLOSE_AUTH_FAILED,
    CLOSE_GOING_AWAY,
    CLOSE_GRACE,
    CLOSE_INTERNAL_ERROR,
    CLOSE_PROTOCOL_ERROR,
    ServerSession,
    State,
)
from ..ticker import Ticker
from .core import Core
from .memory import Trimmer
from .peers import Peer

log = logging.getLogger("easyjobs.manager")

CLOSE_ABNORMAL = 1006
"""The code of a connection that ended without a close frame (RFC 6455)."""
HANDSHAKE_TIMEOUT = 5.0
"""Seconds a new connection has to authenticate before it is closed (4003)."""
MAX_BACKLOG = 4 << 20
"""Bytes held for one peer, queued or being written, before it is dropped (4004)."""
MAX_CONNECTIONS = 1000
"""WebSocket connections one manager serves at once; more are refused with HTTP 503."""
MAX_UNAUTHENTICATED = 100
"""Connections still authenticating at once; more are refused with HTTP 503."""


class WebSocketPeer(Peer):
    """A peer on a WebSocket: frames go into its session and wake its writer."""

    def __init__(self, connection: Connection, peer_id: str) -> None:
        super().__init__(peer_id, connection.session.name, connection.session.role)
        self.session = connection.session
        self._connection = connection
        self._wake = connection.wake

    def send(self, frame: Frame) -> None:
        try:
            self.session.send(frame)
        except ConnectionLost:
            # Maybe called from inside the core (an assign): never re-enter it from here.
            self._connection.closed()
            return
        self._wake.set()

    def close(self, code: int, error: EasyJobsError) -> None:
        self.session.fail(code, error)
        self._connection.closed()


class Connection:
    """One WebSocket's session, its writer's wake-up and the end of its pump."""

    def __init__(self, core: Core, session: ServerSession, session_id: str) -> None:
        self.session = session
        self.session_id = session_id
        self.wake = asyncio.Event()
        self.wake.set()
        self.ended = asyncio.Event()
        """Set once the session is closed: the pump stops waiting on the socket."""
        self.peer: WebSocketPeer | None = None
        self.peer_code = CLOSE_ABNORMAL
        """The code of the peer's close frame, if it sent one."""
        self._core = core
        self._loop = asyncio.get_running_loop()

    def poke(self) -> None:
        """Flush what the session queued (the ticker calls this after every tick)."""
        self.wake.set()
        if self.session.state is State.CLOSED:
            self.closed()

    def closed(self) -> None:
        """The session closed: end the pump, and drop the peer on the next turn of the loop."""
        self.wake.set()
        if not self.ended.is_set():
            self.ended.set()
            if self.peer is not None:
                self._loop.call_soon(self._core.disconnect, self.peer)


class Endpoint:
    """Serves ``/ws/jobs`` for one manager; ``close_all`` ends every connection on shutdown."""

    def __init__(self, core: Core, secret: bytes, heartbeat: float, max_message: int,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT, *,
                 max_backlog: int = MAX_BACKLOG, max_connections: int = MAX_CONNECTIONS,
                 max_unauthenticated: int = MAX_UNAUTHENTICATED) -> None:
        self._core = core
        self._secret = secret
        self._heartbeat = heartbeat
        self._max_message = max_message
        self._handshake_timeout = handshake_timeout
        self._max_backlog = max_backlog
        self._max_connections = max_connections
        self._max_unauthenticated = max_unauthenticated
        self._open: dict[ServerSession, Connection] = {}
        self.closed: dict[tuple[str, int], int] = {}
        """Connections ended, by role (``unauthenticated`` before a hello is accepted) and
        close code: the manager's when it closed first, else the peer's (1006: none)."""
        self._closing = False
        self._trimmer = Trimmer()

    def close_all(self) -> None:
        """Close every connection with 1001 (peers reconnect to the next manager)."""
        self._closing = True
        self._trimmer.cancel()
        for session, connection in self._open.items():
            session.close(CLOSE_GOING_AWAY, "manager shutting down")
            connection.closed()

    def open_by_role(self) -> dict[str, int]:
        """The connections open now, by role (``unauthenticated`` while authenticating)."""
        counts: dict[str, int] = {}
        for session in self._open:
            role = session.role if session.state is State.OPEN else "unauthenticated"
            counts[role] = counts.get(role, 0) + 1
        return counts

    def _refusal(self) -> str | None:
        """Why a new connection cannot be served now, if it cannot."""
        if len(self._open) >= self._max_connections:
            return f"this manager serves at most {self._max_connections} connections"
        waiting = sum(1 for session in self._open if session.state is not State.OPEN)
        if waiting >= self._max_unauthenticated:
            return f"over {self._max_unauthenticated} connections are authenticating"
        return None

    async def serve(self, websocket: WebSocket) -> None:
        """Run one connection from handshake to close."""
        if self._closing:
            await websocket.close(CLOSE_GOING_AWAY)
            return
        refusal = self._refusal()
        if refusal is not None:
            log.warning("refused a connection: %s", refusal)
            await websocket.send_denial_response(
                PlainTextResponse(f"{refusal}; retry later", status_code=503))
            return
        await websocket.accept()
        loop = asyncio.get_running_loop()
        session_id = secrets.token_hex(8)
        session = ServerSession(
            self._secret, loop.time(), nonce=new_nonce(), session_id=session_id,
            heartbeat=self._heartbeat, max_message=self._max_message,
            handshake_timeout=self._handshake_timeout, max_backlog=self._max_backlog,
            keys=self._core.credentials.key, admit=self._admit,
        )
        connection = Connection(self._core, session, session_id)
        self._open[session] = connection
        ticker = Ticker(session, connection.poke)
        reader = loop.create_task(self._read(websocket, connection, ticker))
        writer = loop.create_task(self._write(websocket, connection))
        ended = loop.create_task(connection.ended.wait())
        try:
            await asyncio.wait({reader, writer, ended}, return_when=asyncio.FIRST_COMPLETED)
            if session.error is not None:
                where = websocket.client
                log.warning("closing connection %s from %s (%s): %s", session_id,
                            f"{where.host}:{where.port}" if where else "an unknown address",
                            session.claimed or "no hello", session.error)
            if session.state is not State.CLOSED:
                writer.cancel()  # the socket is gone (or the writer failed): nothing more to send
            connection.wake.set()
            # The writer sends what is left and closes; a peer that stopped reading gets
            # CLOSE_GRACE seconds, not for ever.
            await asyncio.wait({writer}, timeout=CLOSE_GRACE)
        finally:
            peer = connection.peer
            if peer is not None:
                self._core.disconnect(peer)
                log.info("%s %r disconnected", peer.role, peer.name)
            for task in (reader, writer, ended):
                task.cancel()
            for outcome in await asyncio.gather(reader, writer, return_exceptions=True):
                if isinstance(outcome, Exception):
                    log.error("connection %s failed", session_id, exc_info=outcome)
            ticker.cancel()
            self._open.pop(session, None)
            how = ("unauthenticated" if peer is None else peer.role,
                   session.close_code or connection.peer_code)
            self.closed[how] = self.closed.get(how, 0) + 1
            if session.error is not None and not self._closing:
                self._trimmer.soon()  # what a dropped peer cost goes back to the OS

    def _admit(self, credential: str, role: str) -> EasyJobsError | None:
        """Why ``credential`` may not connect as a ``role`` (worker or client), if it may not."""
        grant = self._core.credentials.grant(credential)
        if grant is not None and not grant.may_connect_as(role):
            return grant.denied(f"connect as a {role}")
        return None

    async def _read(self, websocket: WebSocket, connection: Connection, ticker: Ticker) -> None:
        loop = asyncio.get_running_loop()
        session = connection.session
        try:
            while session.state is not State.CLOSED:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    connection.peer_code = message.get("code", CLOSE_ABNORMAL)
                    return
                data = message.get("bytes")
                if data is None:
                    session.fail(CLOSE_PROTOCOL_ERROR,
                                 ProtocolError("text messages are not allowed"))
                    break
                frames = session.receive(data, loop.time())
                if frames and isinstance(frames[0], Hello):
                    grant = self._core.credentials.grant(session.credential)
                    if grant is None:  # revoked since its proof was checked
                        session.fail(CLOSE_AUTH_FAILED, AuthenticationError(
                            f"credential {session.credential!r} was revoked"))
                        break
                    connection.peer = WebSocketPeer(connection, connection.session_id)
                    connection.peer.grant = grant
                    self._core.connect(connection.peer)
                    log.info("%s %r connected with %s", session.role, session.name, grant)
                    frames = frames[1:]
                    ticker.reschedule()
                peer = connection.peer
                if peer is not None and frames:
                    try:
                        self._core.handle(peer, frames)
                    except ProtocolError as exc:
                        session.fail(CLOSE_PROTOCOL_ERROR, exc)
                    except Exception:  # a bug of ours: this peer goes, everyone else stays
                        log.exception("internal error handling frames from %r", peer.name)
                        session.fail(CLOSE_INTERNAL_ERROR, EasyJobsError("internal error"))
                connection.wake.set()
        except WebSocketDisconnect as exc:
            connection.peer_code = exc.code
            return
        connection.closed()

    async def _write(self, websocket: WebSocket, connection: Connection) -> None:
        loop = asyncio.get_running_loop()
        session = connection.session
        try:
            while True:
                await connection.wake.wait()
                connection.wake.clear()
                for message in session.data_to_write(loop.time()):
                    await websocket.send_bytes(message)
                    session.written(len(message), loop.time())
                if session.state is State.CLOSED:
                    await websocket.close(session.close_code or CLOSE_GOING_AWAY,
                                          session.close_reason)
                    return
        except WebSocketDisconnect:
            return  # the peer went away first
        except RuntimeError:
            if websocket.application_state is not WebSocketState.DISCONNECTED:
                raise  # not Starlette's "already closed": a bug, logged by ``serve``
