"""Shared pieces for the session tests: fixed secrets and nonces, session factories, a pump."""

from __future__ import annotations

from collections.abc import Callable

from easyjobs.errors import EasyJobsError
from easyjobs.protocol.frames import Frame, decode_message
from easyjobs.protocol.session import ClientSession, ServerSession, State

SECRET = b"s3cret-for-tests"
SERVER_NONCE = bytes(range(32))
PEER_NONCE = bytes(range(16, 32))
JOB = "0123456789abcdef0123456789abcdef"
HEARTBEAT = 1.0

# What make_server() sends first, written by hand: {type: "challenge", version: 1, nonce: bin8}.
CHALLENGE_BYTES = bytes.fromhex(
    "83 a4 74797065 a9 6368616c6c656e6765 a7 76657273696f6e 01 a5 6e6f6e6365 c4 20"
    " 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
)


Session = ServerSession | ClientSession


def make_server(secret: bytes = SECRET, max_message: int = 1 << 20,
                keys: Callable[[str], bytes | None] | None = None,
                admit: Callable[[str, str], EasyJobsError | None] | None = None,
                ) -> ServerSession:
    """A manager's session started at time 0, its challenge queued."""
    return ServerSession(secret, 0.0, nonce=SERVER_NONCE, session_id="s1", heartbeat=HEARTBEAT,
                         max_message=max_message, keys=keys, admit=admit)


def make_client(role: str = "worker", secret: bytes = SECRET, now: float = 0.0) -> ClientSession:
    """A peer's session named ``w1``, awaiting the challenge."""
    return ClientSession(secret, now, role=role, name="w1", nonce=PEER_NONCE)


def pump(src: Session, dst: Session, now: float = 0.0) -> list[Frame]:
    """Deliver everything ``src`` wants sent to ``dst``; the frames ``dst`` hands on."""
    events: list[Frame] = []
    for message in src.data_to_send(now):
        events.extend(dst.receive(message, now))
    return events


def sent(session: Session, now: float | None = None) -> list[Frame]:
    """The frames ``session`` wants sent, decoded."""
    return [frame for message in session.data_to_send(now) for frame in decode_message(message)]


def open_pair(
    role: str = "worker", max_message: int = 1 << 20
) -> tuple[ServerSession, ClientSession]:
    """A manager and a peer that completed the handshake at time 0, nothing left to send."""
    server, client = make_server(max_message=max_message), make_client(role)
    pump(server, client)
    pump(client, server)
    pump(server, client)
    assert server.state is State.OPEN and client.state is State.OPEN
    return server, client
