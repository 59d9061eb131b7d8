"""The link: one persistent, authenticated WebSocket to the manager, reconnected with backoff.

A thin pump over ``ClientSession``: read a message, feed the session, hand frames on, send what
the session wants sent. Replies to calls go to ``Calls``; anything else (``assign``) goes to the
``on_frame`` callback. Transient failures reconnect with exponential backoff and jitter, and the
calls in flight are re-sent (they are idempotent). Fatal ones (wrong secret, protocol version)
end the link and fail every pending call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ..errors import (
    AuthenticationError,
    ConnectionLost,
    EasyJobsError,
    ProtocolError,
    SerializationError,
    UnsupportedVersion,
)
from ..protocol.auth import new_nonce
from ..protocol.frames import Frame, encode_frame
from ..protocol.session import (
    CLOSE_AUTH_FAILED,
    CLOSE_GOING_AWAY,
    CLOSE_GRACE,
    CLOSE_NORMAL,
    CLOSE_UNSUPPORTED_VERSION,
    FATAL_CLOSE_CODES,
    ClientSession,
    State,
)
from ..remote import Calls
from ..ticker import Ticker

log = logging.getLogger("easyjobs.link")

WS_PATH = "/ws/jobs"
MAX_RECEIVE = 16 << 20
"""Largest WebSocket message read before the session's own (smaller) limit applies."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits up to ``initial * factor**n``."""

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 5.0

    def __call__(self, attempt: int) -> float:
        return random.uniform(0, min(self.maximum, self.initial * self.factor ** min(attempt, 64)))


DEFAULT_BACKOFF = Backoff()


def default_name(role: str) -> str:
    """A readable peer name: role, host and pid."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


class Link:
    """Keeps one session to the manager open and routes its frames."""

    def __init__(
        self,
        host: str,
        port: int,
        secret: bytes,
        *,
        role: str,
        name: str | None = None,
        on_frame: Callable[[Frame], None] | None = None,
        on_open: Callable[[], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        backoff: Callable[[int], float] = DEFAULT_BACKOFF,
    ) -> None:
        self._uri = f"ws://{_host(host)}:{port}{WS_PATH}"
        self._secret = secret
        self.role = role
        self.name = name or default_name(role)
        self.on_frame = on_frame
        self.on_open = on_open
        self.on_lost = on_lost
        self._backoff = backoff
        self.calls = Calls(self.send)
        self._session: ClientSession | None = None
        self._wake = asyncio.Event()
        self._opened = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.error: EasyJobsError | None = None

    @property
    def is_open(self) -> bool:
        return self._session is not None and self._session.state is State.OPEN

    def send(self, frame: Frame) -> None:
        """Queue a frame for the manager; while reconnecting, calls are re-sent on open."""
        session = self._session
        if session is not None and session.state is State.OPEN:
            session.send(frame)
            self._wake.set()
        elif self.error is not None:
            raise self.error
        else:
            encode_frame(frame)  # still refuse what can never be sent

    # ------------------------------------------------------------------ lifecycle

    async def start(self, connect_timeout: float = 10.0) -> None:
        """Connect; return once open, raise on a fatal error, or keep trying in the background.

        Raises ``AuthenticationError`` or ``UnsupportedVersion`` when the manager refuses us.
        If the manager is unreachable for ``connect_timeout`` seconds this returns anyway (with
        a warning) and the link keeps reconnecting; calls made meanwhile wait for it.
        """
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="easyjobs link")
        opened = asyncio.ensure_future(self._opened.wait())
        try:
            await asyncio.wait({opened, self._task}, timeout=connect_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
        if self.error is not None:
            raise self.error
        if not self.is_open:
            log.warning("manager at %s not reachable yet; still trying", self._uri)

    async def close(self) -> None:
        """Close the link for good; pending calls fail with ``ConnectionLost``."""
        self._closing = True
        if self._session is not None and self._session.state is not State.CLOSED:
            self._session.close(CLOSE_NORMAL, "closing")
            self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 2.0)
            except asyncio.TimeoutError:
                self._task.cancel()
            except Exception:  # the error is already recorded and logged
                pass
            if not self._task.done():
                await asyncio.gather(self._task, return_exceptions=True)
        self.calls.fail_all(ConnectionLost("the link to the manager was closed"))

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                async with connect(
                    self._uri, max_size=MAX_RECEIVE, compression=None, ping_interval=None,
                    open_timeout=10, close_timeout=2,
                ) as ws:
                    await self._serve(ws)
            except (AuthenticationError, UnsupportedVersion, ProtocolError) as exc:
                self.error = exc
                if isinstance(exc, AuthenticationError):
                    log.error("authentication failed: %s", exc)
                else:
                    log.error("link to manager failed for good: %s", exc)
                self.calls.fail_all(exc)
                return
            except (OSError, asyncio.TimeoutError, InvalidHandshake, InvalidURI,
                    ConnectionClosed) as exc:
                if not self._closing:
                    log.info("manager unreachable (%s); retrying", exc.__class__.__name__)
            except Exception:  # a bug of ours: keep the link alive rather than die unseen
                log.exception("link to manager failed unexpectedly; reconnecting")
            finally:
                if self._opened.is_set():
                    attempt = 0  # got past the handshake: the backoff starts afresh
                self._session = None
                self._opened.clear()
            if self._closing:
                break
            delay = self._backoff(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    async def _serve(self, ws: ClientConnection) -> None:
        """Run one connection, from the handshake until it closes."""
        loop = asyncio.get_running_loop()
        session = ClientSession(self._secret, loop.time(), role=self.role, name=self.name,
                                nonce=new_nonce())
        self._session = session
        writer = loop.create_task(self._write(ws, session))
        ticker = Ticker(session, self._wake.set)
        opened = False
        try:
            while session.state is not State.CLOSED:
                try:
                    data = await ws.recv()
                except ConnectionClosed as exc:
                    self._raise_fatal(exc)
                    raise
                if isinstance(data, str):
                    session.fail(4000, ProtocolError("text messages are not allowed"))
                    break
                frames = session.receive(data, loop.time())
                for frame in frames:
                    if not opened:  # the first frame out of receive() is the welcome
                        opened = True
                        ticker.reschedule()
                        self._opened_now()
                        continue
                    if not self.calls.handle(frame) and self.on_frame is not None:
                        self.on_frame(frame)
                self._wake.set()
            if session.error is not None and session.close_code in FATAL_CLOSE_CODES:
                raise session.error
        finally:
            if session.state is not State.CLOSED:
                writer.cancel()  # the socket is gone: nothing more can be sent on it
            self._wake.set()
            # The writer sends what is left and closes; a peer that stopped reading gets
            # CLOSE_GRACE seconds, not for ever.
            await asyncio.wait({writer}, timeout=CLOSE_GRACE)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            ticker.cancel()
            if opened and self.on_lost is not None:
                self.on_lost()

    def _opened_now(self) -> None:
        self._opened.set()
        log.info("connected to manager at %s as %s", self._uri, self.name)
        if self.on_open is not None:
            self.on_open()
        for frame in self.calls.pending_frames():
            try:
                self.send(frame)
            except SerializationError:  # cannot happen: it was encodable when first sent
                log.exception("dropping a pending call that can no longer be encoded")

    def _raise_fatal(self, exc: ConnectionClosed) -> None:
        code = exc.rcvd.code if exc.rcvd is not None else None
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        if code == CLOSE_AUTH_FAILED:
            raise AuthenticationError(f"the manager refused the secret ({reason or code})")
        if code == CLOSE_UNSUPPORTED_VERSION:
            raise UnsupportedVersion(f"the manager refused our protocol version ({reason})")
        if code in FATAL_CLOSE_CODES:
            raise ProtocolError(f"the manager closed the link: {reason or code}")

    async def _write(self, ws: ClientConnection, session: ClientSession) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                for message in session.data_to_send(loop.time()):
                    await ws.send(message)
                if session.state is State.CLOSED:
                    code = session.close_code or CLOSE_GOING_AWAY
                    await ws.close(code, session.close_reason)
                    return
        except ConnectionClosed:
            return


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host

