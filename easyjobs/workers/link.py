"""The link: one persistent, authenticated WebSocket to a manager, reconnected with backoff.

A thin pump over ``ClientSession``: read a message, feed the session, hand frames on, send what
the session wants sent. Replies to calls go to ``Calls``; anything else (``assign``) goes to the
``on_frame`` callback. The link has a list of managers and keeps to one at a time: when a
connection fails or is lost it moves on to the next, and after a whole round without getting in
it waits with exponential backoff and jitter. On every new connection, whichever manager it
reaches, the calls in flight are re-sent (they are idempotent) and ``on_open`` lets the owner
re-send its own state. Fatal failures (wrong secret, protocol version, TLS) end the link, fail
every pending call and are passed to ``on_failed``.

Two event loops take part. The owner's loop (the one that awaits ``start``) is where ``send``,
``calls`` and the callbacks live. The I/O loop reads, writes and keeps the heartbeats. With
``thread=True`` (workers) the I/O loop runs in a daemon thread of its own, so the manager hears
heartbeats while a task blocks the owner's loop, and a ``Watchdog`` there logs such stalls with
the blocking task's name. Frames cross with ``call_soon_threadsafe``: one hop per message received,
one per batch of frames sent. Without a thread (clients) both loops are the same and the hops are
plain calls. A stalled connection is aborted within the heartbeat window, whatever is queued:
the session times out a silent manager, and a write that does not drain in that window ends it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ..addresses import ManagerAddress, describe
from ..errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLost,
    EasyJobsError,
    PermissionDenied,
    ProtocolError,
    SerializationError,
    TLSError,
    UnsupportedVersion,
)
from ..protocol.auth import new_nonce, split_secret
from ..protocol.frames import HANDSHAKE_MAX_MESSAGE, Frame, encode_frame
from ..protocol.session import (
    CLOSE_AUTH_FAILED,
    CLOSE_GOING_AWAY,
    CLOSE_GRACE,
    CLOSE_NORMAL,
    CLOSE_PERMISSION_DENIED,
    CLOSE_TIMEOUT,
    CLOSE_UNSUPPORTED_VERSION,
    FATAL_CLOSE_CODES,
    MISSED_HEARTBEATS,
    ClientSession,
    State,
)
from ..remote import Calls
from ..ticker import Ticker
from ..tls import ClientTLS
from .dial import WS_PATH as WS_PATH
from .dial import dial
from .watchdog import Watchdog

log = logging.getLogger("easyjobs.link")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits up to ``initial * factor**n``."""

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 5.0

    def __call__(self, attempt: int) -> float:
        return random.uniform(0, min(self.maximum, self.initial * self.factor ** min(attempt, 64)))


DEFAULT_BACKOFF = Backoff()


def refused_secret(role: str, secret: bytes, address: str) -> str:
    """What to fix when the manager at ``address`` refused our secret: which setting of ours
    must match which of the manager's (never the secret itself)."""
    credential, _ = split_secret(secret)
    if credential:
        return (f"the manager at {address} refused credential {credential!r}: it is unknown "
                "or revoked there, or was made by a manager with another secret; make a token "
                f"with `easyjobs credentials add {credential} --role {role}` on that manager")
    setting = "manager_secret=" if role == "worker" else "secret="
    return (f"the manager at {address} refused the secret: the {role}'s {setting} (or its "
            "EASYJOBS_SECRET / EASYJOBS_SECRET_FILE) must equal the manager's EASYJOBS_SECRET, "
            "or be a credential token made by `easyjobs credentials add` on that manager")


def default_name(role: str) -> str:
    """A readable peer name: role, host and pid."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class _Outbox:
    """Frames the owner encoded for session ``gen``; a batch crosses to the I/O loop at once."""

    gen: int
    frames: deque[bytes] = field(default_factory=deque)
    scheduled: bool = False


def _now(fn: Callable[..., object], *args: Any) -> None:
    fn(*args)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Link:
    """Keeps one session to one of the ``managers`` open and routes its frames.

    ``managers`` are tried in order (see the module); ``tls`` is needed when any of them is
    reached over TLS. ``thread``: run the I/O loop in a daemon thread of its own (workers).
    ``request_timeout``: seconds a request waits while the link is down before it fails with
    ``ConnectionLost`` (None: it waits for the link to come back). ``on_failed`` is called with
    the error when the link ends for good (wrong secret, protocol mismatch, TLS), before or
    after start-up. ``quiet``: the owner reports what matters (one manager's link to
    another), so the link's own lines about connecting, losing and failing are DEBUG.
    """

    def __init__(
        self,
        managers: Sequence[ManagerAddress],
        secret: bytes,
        *,
        role: str,
        tls: ClientTLS | None = None,
        name: str | None = None,
        on_frame: Callable[[Frame], None] | None = None,
        on_open: Callable[[], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        on_failed: Callable[[EasyJobsError], None] | None = None,
        backoff: Callable[[int], float] = DEFAULT_BACKOFF,
        thread: bool = False,
        request_timeout: float | None = None,
        quiet: bool = False,
    ) -> None:
        if not managers:
            raise ConfigurationError("a link needs at least one manager address")
        if tls is None and any(address.tls for address in managers):
            raise ConfigurationError("a link to a wss:// manager needs its TLS settings")
        self.managers = tuple(managers)
        self.address = str(self.managers[0])
        """The manager connected to, or being tried now."""
        self._tls = tls
        self._secret = secret
        self.role = role
        self.name = name or default_name(role)
        self.on_frame = on_frame
        self.on_open = on_open
        self.on_lost = on_lost
        self.on_failed = on_failed
        self._backoff = backoff
        self._threaded = thread
        self._request_timeout = request_timeout
        self._quiet = quiet
        self.calls = Calls(self.send)
        self.error: EasyJobsError | None = None
        # The owner's side.
        self._owner_loop: asyncio.AbstractEventLoop | None = None
        self._outbox: _Outbox | None = None
        self._max_message = HANDSHAKE_MAX_MESSAGE
        self._opened = asyncio.Event()
        self._ended = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None
        self._to_io: Callable[..., object] = _now
        # The I/O side.
        self._io_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: ClientSession | None = None
        self._ws: ClientConnection | None = None
        self._gen = 0
        self._wake: asyncio.Event  # made on the I/O loop by _run
        self._writing_since: float | None = None
        self._written_waiters: list[Callable[[], None]] = []
        self._got_welcome = False
        self._closing = False
        self._watchdog: Watchdog | None = None

    @property
    def is_open(self) -> bool:
        """Whether the owner may send (a session is open, as far as the owner has heard)."""
        return self._outbox is not None

    # ------------------------------------------------------------------ the owner's side

    def send(self, frame: Frame) -> None:
        """Queue a frame for the manager; while reconnecting, calls are re-sent on open.

        Raises ``SerializationError`` (nothing queued) for a frame that cannot be encoded.
        """
        box = self._outbox
        if box is not None:
            box.frames.append(encode_frame(frame, self._max_message))
            if not box.scheduled:
                box.scheduled = True
                try:
                    self._to_io(self._flush, box)
                except RuntimeError:  # the I/O loop has just closed: as if the socket had
                    pass
        elif self.error is not None:
            raise self.error
        else:
            encode_frame(frame)  # still refuse what can never be sent
            if self._request_timeout is not None and self._expiry is None \
                    and self._owner_loop is not None:
                self._expiry = self._owner_loop.call_later(self._request_timeout, self._expire)

    async def start(self, connect_timeout: float = 10.0) -> None:
        """Start the link and wait up to ``connect_timeout`` seconds for it to open.

        Raises ``AuthenticationError``, ``UnsupportedVersion`` or ``ProtocolError`` when the
        manager refuses us. If no manager answered in time this returns with ``is_open`` False
        and the link keeps trying in the background.
        """
        if self._owner_loop is None:
            loop = self._owner_loop = asyncio.get_running_loop()
            if self._threaded:
                self._io_loop = asyncio.new_event_loop()
                self._to_io = self._io_loop.call_soon_threadsafe
                self._thread = threading.Thread(
                    target=self._thread_main, name=f"easyjobs link {self.name}", daemon=True)
                self._thread.start()
            else:
                self._io_loop = loop
                self._task = loop.create_task(self._run(), name="easyjobs link")
        opened = asyncio.ensure_future(self._opened.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({opened, ended}, timeout=connect_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
            ended.cancel()
        if self.error is not None:
            raise self.error
        if self._threaded and self.is_open:
            # What ``on_open`` sent (a worker's tasks) is on the wire before this returns, as
            # without a thread: a caller may submit to those tasks at once.
            # The link may also end meanwhile (its first frames refused for good): then the
            # written callback never comes, and this raises at once.
            written = self._owner_loop.create_future()
            ended = asyncio.ensure_future(self._ended.wait())
            self._to_io(self._io_when_written, lambda: self._post(_resolve, written))
            try:
                await asyncio.wait({written, ended}, timeout=connect_timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
            if self.error is not None:
                raise self.error

    async def close(self) -> None:
        """Close the link for good (its thread too); pending calls fail with ``ConnectionLost``."""
        if self._owner_loop is not None and not self._ended.is_set():
            try:
                self._to_io(self._io_close)
                await asyncio.wait_for(self._ended.wait(), CLOSE_GRACE + 1)
            except (asyncio.TimeoutError, RuntimeError):
                log.warning("the link to %s did not close in time; abandoning it", self.address)
        if self._thread is not None:
            self._thread.join(1.0)  # its loop is closing: this is short
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.calls.fail_all(ConnectionLost("the link to the manager was closed"))

    def _opened_now(self, gen: int, max_message: int, address: ManagerAddress) -> None:
        self._max_message = max_message
        self._outbox = _Outbox(gen)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self._opened.set()
        log.log(logging.DEBUG if self._quiet else logging.INFO,
                "connected to manager at %s as %s", address, self.name)
        if self.on_open is not None:
            self.on_open()
        for frame in self.calls.pending_frames():
            try:
                self.send(frame)
            except SerializationError:  # cannot happen: it was encodable when first sent
                log.exception("dropping a pending call that can no longer be encoded")

    def _deliver(self, frames: list[Frame]) -> None:
        for frame in frames:
            if not self.calls.handle(frame) and self.on_frame is not None:
                self.on_frame(frame)

    def _lost_now(self) -> None:
        self._outbox = None
        self._opened.clear()
        if self.on_lost is not None:
            self.on_lost()
        self._expire()

    def _ended_now(self, error: EasyJobsError | None) -> None:
        self._outbox = None
        if error is not None:
            self.error = error
            self.calls.fail_all(error)
            if self.on_failed is not None:
                self.on_failed(error)
        self._ended.set()

    def _expire(self) -> None:
        """Fail requests the link has been down for longer than ``request_timeout``."""
        self._expiry = None
        if self._request_timeout is None or self._outbox is not None or self._ended.is_set():
            return
        assert self._owner_loop is not None
        error = ConnectionLost(
            f"no answer from the manager at {describe(self.managers)} within "
            f"{self._request_timeout:g}s: the link is down; check that `easyjobs manager` is "
            "running there")
        oldest = self.calls.expire(self._owner_loop.time() - self._request_timeout, error)
        if oldest is not None:
            self._expiry = self._owner_loop.call_at(oldest + self._request_timeout, self._expire)

    # ------------------------------------------------------------------ the I/O side

    def _post(self, fn: Callable[..., object], *args: Any) -> None:
        """Run ``fn`` on the owner's loop: at once without a thread, in order with one."""
        if not self._threaded:
            fn(*args)
            return
        assert self._owner_loop is not None
        try:
            self._owner_loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the owner's loop is closed: nobody is left to serve
            self._io_close()

    def _thread_main(self) -> None:
        loop = self._io_loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            assert self._owner_loop is not None
            self._watchdog = Watchdog(self._owner_loop, loop, self._post)
            self._watchdog.start()
            self._task = loop.create_task(self._run(), name="easyjobs link")
            loop.run_until_complete(asyncio.gather(self._task, return_exceptions=True))
        finally:
            self._watchdog = None
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())  # ``dial``'s probes
            loop.close()

    def _io_close(self) -> None:
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.stop()
        session, ws = self._session, self._ws
        if session is None or ws is None:  # connecting or backing off: nothing to flush
            if self._task is not None:
                self._task.cancel()
            return
        if session.state is not State.CLOSED:
            session.close(CLOSE_NORMAL, "closing")
            self._wake.set()
        # A manager that stopped reading gets CLOSE_GRACE seconds to take our close, not ever.
        asyncio.get_running_loop().call_later(CLOSE_GRACE, ws.transport.abort)

    def _io_when_written(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once what the session holds now has been written (or is lost)."""
        if self._session is None:
            callback()
            return
        self._written_waiters.append(callback)
        self._wake.set()

    def _flush(self, box: _Outbox) -> None:
        """Move a batch the owner encoded into the session it was meant for."""
        box.scheduled = False  # before draining: a frame appended from now on schedules anew
        session = self._session
        frames = box.frames
        if box.gen != self._gen or session is None or session.state is not State.OPEN:
            frames.clear()  # that session is gone: as if written to a closed socket
            return
        try:
            while frames:
                session.send_encoded(frames.popleft())
        except ConnectionLost:  # the manager stopped reading (close 4004): reconnect
            frames.clear()
        self._wake.set()

    async def _run(self) -> None:
        self._wake = asyncio.Event()
        error: EasyJobsError | None = None
        attempt = 0  # rounds of the whole list without getting in, since the last success
        tried = 0  # managers tried in this round
        index = 0
        try:
            while not self._closing:
                address = self.managers[index]
                self.address = str(address)
                self._got_welcome = False
                reason = "it closed the connection"
                try:
                    async with await dial(address, self._tls) as ws:
                        await self._serve(ws, address)
                except (AuthenticationError, PermissionDenied, UnsupportedVersion,
                        ProtocolError, TLSError) as exc:
                    error = exc
                    level = logging.DEBUG if self._quiet else logging.ERROR
                    if isinstance(exc, AuthenticationError):
                        log.log(level, "authentication failed: %s; not retrying", exc)
                    elif isinstance(exc, PermissionDenied):
                        log.log(level, "permission denied by the manager at %s: %s; not "
                                "retrying", address, exc)
                    elif isinstance(exc, TLSError):
                        log.log(level, "%s; not retrying", exc)
                    else:
                        log.log(level, "link to the manager at %s failed for good: %s",
                                address, exc)
                    return
                except InvalidURI as exc:  # a redirect to somewhere we cannot go
                    error = ConfigurationError(f"cannot connect to {address}: {exc}")
                    log.error("%s", error)
                    return
                except (OSError, asyncio.TimeoutError, InvalidHandshake,
                        ConnectionClosed) as exc:
                    reason = exc.__class__.__name__
                except Exception:  # a bug of ours: keep the link alive rather than die unseen
                    log.exception("link to manager failed unexpectedly; reconnecting")
                lost = self._got_welcome
                if lost:  # got past the handshake: the backoff starts afresh
                    attempt = tried = 0
                if self._closing:
                    break
                tried += 1
                index = (index + 1) % len(self.managers)
                log.log(logging.DEBUG if self._quiet else
                        logging.WARNING if lost else logging.INFO,
                        "manager unreachable at %s (%s%s); %s", address,
                        "connection lost: " if lost else "", reason,
                        f"switching to the manager at {self.managers[index]}"
                        if len(self.managers) > 1 else "retrying")
                if tried >= len(self.managers):  # a whole round without getting in
                    tried = 0
                    delay = self._backoff(attempt)
                    attempt += 1
                    await asyncio.sleep(delay)
        finally:
            self._post(self._ended_now, error)

    async def _serve(self, ws: ClientConnection, address: ManagerAddress) -> None:
        """Run one connection, from the handshake until it closes."""
        loop = asyncio.get_running_loop()
        session = ClientSession(self._secret, loop.time(), role=self.role, name=self.name,
                                nonce=new_nonce())
        self._gen += 1
        gen = self._gen
        self._session, self._ws = session, ws
        self._writing_since = None
        writer = loop.create_task(self._write(ws, session))
        ticker = Ticker(session, lambda: self._ticked(ws, session))
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
                if frames and not opened:  # the first frame out of receive() is the welcome
                    opened = self._got_welcome = True
                    ticker.reschedule()
                    self._post(self._opened_now, gen, session.max_message, address)
                    frames = frames[1:]
                if frames:
                    self._post(self._deliver, frames)
                self._wake.set()
            if session.error is not None and session.close_code in FATAL_CLOSE_CODES:
                raise session.error
        finally:
            if opened:  # first: what the owner sends from now on cannot reach this session
                self._post(self._lost_now)
            if session.state is not State.CLOSED:
                writer.cancel()  # the socket is gone: nothing more can be sent on it
            self._wake.set()
            # The writer sends what is left and closes; a peer that stopped reading gets
            # CLOSE_GRACE seconds, not for ever.
            await asyncio.wait({writer}, timeout=CLOSE_GRACE)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            ticker.cancel()
            self._session = self._ws = None
            waiters, self._written_waiters = self._written_waiters, []
            for callback in waiters:
                callback()

    def _ticked(self, ws: ClientConnection, session: ClientSession) -> None:
        """After each tick: flush, and abort a connection that stalled (the session knows when
        the manager went silent; a write pending for the whole window means it stopped reading).
        """
        self._wake.set()
        if session.state is State.CLOSED:
            if session.close_code == CLOSE_TIMEOUT:
                log.warning("the manager at %s went silent (%s); reconnecting",
                            self.address, session.error)
                ws.transport.abort()  # presumed gone: no closing handshake to wait for
            return
        since = self._writing_since
        window = session.heartbeat * MISSED_HEARTBEATS
        if since is not None and asyncio.get_running_loop().time() - since >= window:
            log.warning("the manager at %s read nothing we sent for %gs; reconnecting",
                        self.address, window)
            session.close(CLOSE_TIMEOUT, "not reading")
            ws.transport.abort()

    def _raise_fatal(self, exc: ConnectionClosed) -> None:
        code = exc.rcvd.code if exc.rcvd is not None else None
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        if code == CLOSE_AUTH_FAILED:
            raise AuthenticationError(refused_secret(self.role, self._secret, self.address))
        if code == CLOSE_PERMISSION_DENIED:
            raise PermissionDenied(reason or "permission denied")
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
                waiters = None
                if self._written_waiters:
                    waiters, self._written_waiters = self._written_waiters, []
                for message in session.data_to_send(loop.time()):
                    self._writing_since = loop.time()
                    await ws.send(message)
                self._writing_since = None
                if waiters is not None:
                    for callback in waiters:
                        callback()
                if session.state is State.CLOSED:
                    code = session.close_code or CLOSE_GOING_AWAY
                    await ws.close(code, session.close_reason)
                    return
        except ConnectionClosed:
            return

