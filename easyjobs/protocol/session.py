"""One connection's protocol state, sans-I/O: bytes and clock readings in, frames and bytes out.

The I/O layer feeds every received message to ``receive`` and the current time to ``tick``, sends
what ``data_to_send`` returns, and closes the socket with ``close_code`` once it is set. The
session never raises on what the peer sent: it records the fault, queues an ``error`` frame where
the peer can still read one, and sets the close code.

States (one table, ``_ACCEPTS``, says which frames each state takes from the peer):

    server: AWAIT_HELLO --hello ok--> OPEN --fault/close--> CLOSED
    peer:   AWAIT_CHALLENGE --challenge--> AWAIT_WELCOME --welcome ok--> OPEN --> CLOSED
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum

from ..errors import (
    AuthenticationError,
    ConnectionLost,
    EasyJobsError,
    PermissionDenied,
    ProtocolError,
    UnsupportedVersion,
    error_from_code,
)
from . import auth
from .frames import (
    HANDSHAKE_MAX_MESSAGE,
    PROTOCOL_VERSION,
    Abort,
    Accepted,
    Assign,
    Cancel,
    Challenge,
    Credit,
    Done,
    DoneAck,
    Error,
    Frame,
    Heartbeat,
    Hello,
    JobInfo,
    JobList,
    ListJobs,
    Lookup,
    Pause,
    Register,
    Result,
    Resume,
    Revoke,
    ScheduleInfo,
    Schedules,
    Submit,
    Watch,
    Welcome,
    decode_message,
    encode_frame,
)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TOO_BIG = 1009
CLOSE_PROTOCOL_ERROR = 4000
CLOSE_AUTH_FAILED = 4001
CLOSE_UNSUPPORTED_VERSION = 4002
CLOSE_TIMEOUT = 4003
CLOSE_BACKLOG = 4004
CLOSE_PERMISSION_DENIED = 4005

FATAL_CLOSE_CODES = frozenset({CLOSE_PROTOCOL_ERROR, CLOSE_AUTH_FAILED, CLOSE_UNSUPPORTED_VERSION,
                               CLOSE_PERMISSION_DENIED})
"""Close codes after which reconnecting with the same settings cannot succeed."""

CLOSE_GRACE = 2.0
"""Seconds an I/O pump gives its writer to flush and close before abandoning the socket."""

MAX_BACKLOG = 16 << 20
"""Bytes queued for a peer that is not reading them before it is dropped (close 4004); the
manager passes its own, lower ``max_backlog`` to each ``ServerSession``."""

MISSED_HEARTBEATS = 5
"""A peer silent for this many heartbeat intervals is dead."""

MAX_HEARTBEAT = 3600.0
"""The longest ``welcome.heartbeat`` a peer accepts (seconds); longer would hide a dead manager."""

MAX_MESSAGE_LIMIT = 16 << 20
"""The largest ``welcome.max_message`` a peer accepts (and the largest message it reads)."""

ROLES = ("worker", "client")
MAX_NAME = 200


class State(Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_WELCOME = "await_welcome"
    OPEN = "open"
    CLOSED = "closed"


_CLIENT_SENDS = frozenset({Heartbeat, Error, Submit, Watch, Lookup, Cancel, ListJobs, Schedules})
_WORKER_SENDS = _CLIENT_SENDS | {Register, Credit, Revoke, Pause, Resume, Done}
_SERVER_SENDS = frozenset({Heartbeat, Error, Accepted, JobInfo, Result, JobList, ScheduleInfo})

_ACCEPTS: dict[tuple[str, State], frozenset[type[Frame]]] = {
    ("server", State.AWAIT_HELLO): frozenset({Hello}),
    ("server", State.OPEN): _WORKER_SENDS,  # narrowed to _CLIENT_SENDS for client peers
    ("client", State.AWAIT_CHALLENGE): frozenset({Challenge, Error}),
    ("client", State.AWAIT_WELCOME): frozenset({Welcome, Error}),
    ("client", State.OPEN): _SERVER_SENDS,
    ("worker", State.AWAIT_CHALLENGE): frozenset({Challenge, Error}),
    ("worker", State.AWAIT_WELCOME): frozenset({Welcome, Error}),
    ("worker", State.OPEN): _SERVER_SENDS | {Assign, Abort, DoneAck},
}


class _Session:
    """What both ends share: the outgoing buffer, limits, heartbeats and closing."""

    side: str

    def __init__(self, secret: bytes, now: float, handshake_timeout: float) -> None:
        self._secret = secret
        self.state: State
        self.max_message = HANDSHAKE_MAX_MESSAGE
        self.heartbeat = handshake_timeout / MISSED_HEARTBEATS
        self.close_code: int | None = None
        self.close_reason = ""
        self.error: EasyJobsError | None = None
        self._out: list[bytes] = []
        self._backlog = 0
        """Bytes in ``_out``; the writer empties it unless the peer stopped reading."""
        self._last_received = now
        self._last_sent = now
        self._handshake_deadline = now + handshake_timeout

    @property
    def last_received(self) -> float:
        """When the peer was last heard from (the clock passed to ``receive``)."""
        return self._last_received

    # ----------------------------------------------------------------- outgoing

    def send(self, frame: Frame) -> None:
        """Queue a frame; ``SerializationError`` if it cannot be encoded (nothing is queued)."""
        if self.state is State.CLOSED:
            raise ConnectionLost("the connection is closed")
        self.send_encoded(encode_frame(frame, self.max_message))

    def send_encoded(self, data: bytes) -> None:
        """Queue a frame already encoded within ``max_message`` (a worker encodes on its own
        thread); ``ConnectionLost`` if the session is closed or the peer stopped reading."""
        if self.state is State.CLOSED:
            raise ConnectionLost("the connection is closed")
        limit = self._backlog_limit()
        if self._backlog + len(data) > limit:
            self.error = ConnectionLost(f"peer not reading: over {limit} bytes queued")
            self._closed(CLOSE_BACKLOG, "peer too slow")
            raise self.error
        self._out.append(data)
        self._backlog += len(data)

    def _backlog_limit(self) -> int:
        return MAX_BACKLOG

    def data_to_send(self, now: float | None = None) -> list[bytes]:
        """The queued frames, coalesced into as few messages as the size limit allows."""
        if not self._out:
            return []
        if now is not None:
            self._last_sent = now
        messages: list[bytes] = []
        batch: list[bytes] = []
        size = 0
        for data in self._out:
            if batch and size + len(data) > self.max_message:
                messages.append(b"".join(batch))
                batch, size = [], 0
            batch.append(data)
            size += len(data)
        messages.append(b"".join(batch))
        self._out.clear()
        self._backlog = 0
        return messages

    # ----------------------------------------------------------------- incoming

    def receive(self, data: bytes | str, now: float) -> list[Frame]:
        """Frames of one message that the application must handle (handshake ones are not).

        ``data`` is a WebSocket message; pass a text message as ``str`` and it is refused.
        """
        if self.state is State.CLOSED:
            return []
        self._last_received = now
        if isinstance(data, str):
            self.fail(CLOSE_PROTOCOL_ERROR, ProtocolError("text message; frames are binary"))
            return []
        if len(data) > self.max_message:
            self.fail(
                CLOSE_TOO_BIG,
                ProtocolError(f"message of {len(data)} bytes exceeds {self.max_message}"),
            )
            return []
        try:
            frames = decode_message(data, self.max_message)
        except ProtocolError as exc:
            self.fail(CLOSE_PROTOCOL_ERROR, exc)
            return []
        events: list[Frame] = []
        for frame in frames:
            # Looked up per frame: a handshake frame changes the state mid-message.
            if type(frame) not in self._accepts():
                self.fail(
                    CLOSE_PROTOCOL_ERROR,
                    ProtocolError(f"unexpected {frame.type} frame in state {self.state.value}"),
                )
                return events
            if isinstance(frame, Heartbeat):
                continue
            events.extend(self._handle(frame))
            if self.close_code is not None:
                break
        return events

    def _accepts(self) -> frozenset[type[Frame]]:
        return _ACCEPTS[(self.side, self.state)]

    def _handle(self, frame: Frame) -> list[Frame]:
        return [frame]

    # ----------------------------------------------------------------- time

    def tick(self, now: float) -> float:
        """Send a heartbeat or declare the peer dead as due; returns when to tick next."""
        if self.state is State.CLOSED:
            return now + self.heartbeat
        # No error frame on a timeout: the peer is presumed gone, and the error codes of
        # PROTOCOL.md section 7 do not describe it; close code 4003 says it all.
        if self.state is not State.OPEN:
            if now >= self._handshake_deadline:
                self.error = ConnectionLost("handshake not completed in time")
                self._closed(CLOSE_TIMEOUT, "handshake timeout")
                return now + self.heartbeat
            # Not the deadline itself: I/O loops sleep until the returned time, and the
            # connection may open (and need heartbeats) long before the deadline.
            return min(self._handshake_deadline, now + self.heartbeat)
        timeout = self.heartbeat * MISSED_HEARTBEATS
        if now - self._last_received >= timeout:
            self.error = ConnectionLost(f"peer silent for {timeout:g}s")
            self._closed(CLOSE_TIMEOUT, "heartbeat timeout")
            return now + self.heartbeat
        if now - self._last_sent >= self.heartbeat:
            if not self._out:
                self.send(Heartbeat())
            # Frames already queued count as sent: they leave before any heartbeat would, and
            # a writer stuck behind them must not make the next tick due at once, for ever.
            self._last_sent = now
        return min(self._last_sent + self.heartbeat, self._last_received + timeout)

    # ----------------------------------------------------------------- closing

    def fail(self, code: int, error: EasyJobsError) -> None:
        """Close because of ``error``; the peer gets an ``error`` frame if it can read one."""
        if self.state is State.CLOSED:
            return
        if self.state is State.OPEN or self.side == "server":
            # Cut short so the frame fits any limit: the text may quote what the peer sent.
            message = str(error)[:200]
            self._out.append(encode_frame(Error(error.code, message), self.max_message))
        self.error = error
        self._closed(code, str(error)[:120])

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close on purpose (shutdown); queued frames are still sent."""
        if self.state is not State.CLOSED:
            self._closed(code, reason)

    def _closed(self, code: int, reason: str) -> None:
        self.state = State.CLOSED
        self.close_code = code
        self.close_reason = reason


class ServerSession(_Session):
    """The manager's end: challenges the peer, then checks its proof.

    A writer that takes its messages with ``data_to_write`` and reports them ``written`` keeps
    them counted while its socket is full; then more than ``max_backlog`` bytes held for the
    peer close the link (4004), so a peer that does not read costs little. While the socket
    takes data, a burst queued faster than the writer runs may reach ``MAX_BACKLOG``. A write
    that makes no progress for the heartbeat window closes the link too (4004), whatever the
    peer keeps sending.
    """

    side = "server"

    def __init__(
        self,
        secret: bytes,
        now: float,
        *,
        nonce: bytes,
        session_id: str,
        heartbeat: float,
        max_message: int,
        handshake_timeout: float = 10.0,
        max_backlog: int = MAX_BACKLOG,
        keys: Callable[[str], bytes | None] | None = None,
        admit: Callable[[str, str], EasyJobsError | None] | None = None,
    ) -> None:
        super().__init__(secret, now, handshake_timeout)
        self._keys = keys
        """The key of a named credential, None for a name it does not know (or has revoked)."""
        self._admit = admit
        """Why a credential (proven) may not connect in a role, or None if it may."""
        self.credential = ""
        """The credential the peer proved it holds; "" for the manager secret."""
        self.max_backlog = max_backlog
        self._writing_since: float | None = None
        """When the writer last made progress while it held bytes; None when it holds none."""
        self.state = State.AWAIT_HELLO
        self.role = ""
        self.name = ""
        self.claimed = ""
        """Who the hello said the peer is (role, name, credential), proven or not: for logs."""
        self._nonce = nonce
        self._session_id = session_id
        self._heartbeat_after_hello = heartbeat
        self._max_message_after_hello = max_message
        self.send(Challenge(PROTOCOL_VERSION, nonce))

    def data_to_write(self, now: float) -> list[bytes]:
        """``data_to_send`` for a writer that reports each message ``written``: until then the
        bytes still count against ``max_backlog``, and the heartbeat window runs."""
        messages = self.data_to_send(now)
        if messages:
            self._backlog = sum(map(len, messages))
            if self._writing_since is None:
                self._writing_since = now
        return messages

    @property
    def write_blocked(self) -> bool:
        """Whether the writer holds bytes it has not written yet: the peer's socket is full."""
        return self._writing_since is not None

    def _backlog_limit(self) -> int:
        if self._writing_since is None:  # a burst queued before the writer could run
            return max(self.max_backlog, MAX_BACKLOG)
        return self.max_backlog

    def written(self, size: int, now: float) -> None:
        """``size`` bytes of what ``data_to_write`` returned have left for the socket."""
        self._backlog -= size
        self._writing_since = now if self._backlog > 0 else None

    def tick(self, now: float) -> float:
        since = self._writing_since
        if self.state is not State.OPEN or since is None:
            return super().tick(now)
        window = self.heartbeat * MISSED_HEARTBEATS
        if now - since >= window:
            self.error = ConnectionLost(f"peer not reading: no write progress in {window:g}s")
            self._closed(CLOSE_BACKLOG, "peer too slow")
            return now + self.heartbeat
        return min(super().tick(now), since + window)

    def _accepts(self) -> frozenset[type[Frame]]:
        if self.state is State.OPEN and self.role == "client":
            return _CLIENT_SENDS
        return super()._accepts()

    def _handle(self, frame: Frame) -> list[Frame]:
        if not isinstance(frame, Hello):
            return [frame]
        if frame.version != PROTOCOL_VERSION:
            self.fail(
                CLOSE_UNSUPPORTED_VERSION,
                UnsupportedVersion(
                    f"unsupported protocol version {frame.version}; "
                    f"this manager speaks {PROTOCOL_VERSION}"
                ),
            )
            return []
        if frame.role not in ROLES or not 0 < len(frame.name) <= MAX_NAME:
            self.fail(CLOSE_PROTOCOL_ERROR, ProtocolError("hello: bad role or name"))
            return []
        if not 16 <= len(frame.nonce) <= 64:
            self.fail(CLOSE_PROTOCOL_ERROR, ProtocolError("hello: nonce must be 16 to 64 bytes"))
            return []
        credential = frame.credential or ""
        self.claimed = f"{frame.role} {frame.name!r}" + (
            f" with credential {credential!r}" if credential else "")
        key = self._secret if not credential else self._keys(credential) if self._keys else None
        # An unknown name is checked against a random key: it costs the same as a wrong proof.
        expected = auth.hello_proof(key or auth.new_nonce(), self._nonce, frame.nonce)
        if not auth.proof_matches(expected, frame.proof) or key is None:
            self.error = AuthenticationError(
                f"authentication failed (credential {credential!r})" if credential
                else "authentication failed")
            self._closed(CLOSE_AUTH_FAILED, "authentication failed")
            return []
        refusal = self._admit(credential, frame.role) if self._admit is not None else None
        if refusal is not None:
            self.fail(CLOSE_PERMISSION_DENIED, refusal)
            return []
        self.role, self.name, self.credential = frame.role, frame.name, credential
        self.state = State.OPEN
        self.heartbeat = self._heartbeat_after_hello
        proof = auth.welcome_proof(key, self._nonce, frame.nonce)
        self.send(Welcome(self._session_id, proof, self.heartbeat, self._max_message_after_hello))
        self.max_message = self._max_message_after_hello
        return [frame]


class ClientSession(_Session):
    """A worker's or client's end: answers the challenge, then checks the manager's proof."""

    def __init__(
        self,
        secret: bytes,
        now: float,
        *,
        role: str,
        name: str,
        nonce: bytes,
        handshake_timeout: float = 10.0,
    ) -> None:
        self._credential, key = auth.split_secret(secret)
        super().__init__(key, now, handshake_timeout)
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        self.side = role
        self.state = State.AWAIT_CHALLENGE
        self._role = role
        self._name = name[:MAX_NAME]
        self._nonce = nonce
        self._server_nonce = b""

    def _handle(self, frame: Frame) -> list[Frame]:
        if isinstance(frame, Challenge):
            if len(frame.nonce) != auth.NONCE_SIZE:
                self.fail(CLOSE_PROTOCOL_ERROR, ProtocolError("challenge: nonce must be 32 bytes"))
                return []
            if frame.version != PROTOCOL_VERSION:
                self.error = UnsupportedVersion(
                    f"the manager speaks protocol version {frame.version}; "
                    f"this client speaks {PROTOCOL_VERSION}"
                )
                self._closed(CLOSE_UNSUPPORTED_VERSION, "unsupported protocol version")
                return []
            self._server_nonce = frame.nonce
            proof = auth.hello_proof(self._secret, frame.nonce, self._nonce)
            self.state = State.AWAIT_WELCOME
            self.send(Hello(PROTOCOL_VERSION, self._role, self._name, self._nonce, proof,
                            self._credential or None))
            return []
        if isinstance(frame, Welcome):
            expected = auth.welcome_proof(self._secret, self._server_nonce, self._nonce)
            if not auth.proof_matches(expected, frame.proof):
                self.error = AuthenticationError("the manager could not prove it knows the secret")
                self._closed(CLOSE_AUTH_FAILED, "authentication failed")
                return []
            fault = _welcome_fault(frame)
            if fault:
                self.fail(CLOSE_PROTOCOL_ERROR, ProtocolError(
                    f"welcome: {fault}; the manager is misconfigured or not an easyjobs manager"))
                return []
            self.state = State.OPEN
            self.heartbeat = frame.heartbeat
            self.max_message = frame.max_message
            return [frame]
        if isinstance(frame, Error) and self.state is not State.OPEN:
            self.error = error_from_code(frame.code, frame.message)
            code = (
                CLOSE_UNSUPPORTED_VERSION if isinstance(self.error, UnsupportedVersion)
                else CLOSE_PERMISSION_DENIED if isinstance(self.error, PermissionDenied)
                else CLOSE_PROTOCOL_ERROR
            )
            self._closed(code, frame.message[:120])
            return []
        return [frame]


def _welcome_fault(welcome: Welcome) -> str:
    """What is wrong with the limits a ``welcome`` sets (PROTOCOL.md section 4), or ""."""
    if not (math.isfinite(welcome.heartbeat) and 0 < welcome.heartbeat <= MAX_HEARTBEAT):
        return f"heartbeat {welcome.heartbeat!r} is not within (0, {MAX_HEARTBEAT:g}] seconds"
    if not 0 < welcome.max_message <= MAX_MESSAGE_LIMIT:
        return f"max_message {welcome.max_message} is not within [1, {MAX_MESSAGE_LIMIT}] bytes"
    return ""
