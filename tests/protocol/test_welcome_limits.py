"""The peer's checks on what the manager's ``welcome`` sets (D13), and heartbeat timing while the
writer is stuck behind queued frames: bytes and clock readings only."""

from __future__ import annotations

import math

import pytest

from easyjobs.errors import ProtocolError
from easyjobs.protocol import auth
from easyjobs.protocol.frames import Credit, Welcome, encode_frame
from easyjobs.protocol.session import (
    CLOSE_PROTOCOL_ERROR,
    MAX_HEARTBEAT,
    MAX_MESSAGE_LIMIT,
    ClientSession,
    State,
)

from .helpers import HEARTBEAT, PEER_NONCE, SECRET, SERVER_NONCE, make_client, make_server, pump


def _welcomed(heartbeat: float, max_message: int) -> ClientSession:
    """A peer that got a correctly proven welcome carrying these limits."""
    server, client = make_server(), make_client()
    pump(server, client)
    client.data_to_send(0.0)  # the hello
    proof = auth.welcome_proof(SECRET, SERVER_NONCE, PEER_NONCE)
    client.receive(encode_frame(Welcome("s1", proof, heartbeat, max_message)), 0.0)
    return client


@pytest.mark.parametrize(("heartbeat", "max_message"), [
    (0.0, 1 << 20), (-1.0, 1 << 20), (math.nan, 1 << 20), (math.inf, 1 << 20),
    (MAX_HEARTBEAT * 2, 1 << 20), (HEARTBEAT, 0), (HEARTBEAT, -5),
    (HEARTBEAT, MAX_MESSAGE_LIMIT + 1),
])
def test_welcome_with_absurd_limits_is_a_protocol_error(heartbeat: float, max_message: int) -> None:
    """A heartbeat not in (0, 3600] s or a max_message not in [1, 16 MiB] closes with 4000."""
    client = _welcomed(heartbeat, max_message)
    assert (client.state, client.close_code) == (State.CLOSED, CLOSE_PROTOCOL_ERROR)
    assert isinstance(client.error, ProtocolError)
    assert "welcome" in str(client.error) and "misconfigured" in str(client.error)


@pytest.mark.parametrize(("heartbeat", "max_message"), [
    (0.01, 1), (MAX_HEARTBEAT, MAX_MESSAGE_LIMIT), (HEARTBEAT, 1 << 20),
])
def test_welcome_at_the_limits_opens(heartbeat: float, max_message: int) -> None:
    """The bounds themselves are accepted."""
    client = _welcomed(heartbeat, max_message)
    assert client.state is State.OPEN
    assert (client.heartbeat, client.max_message) == (heartbeat, max_message)


def test_tick_is_not_due_at_once_while_frames_wait_for_the_writer() -> None:
    """Frames queued but not yet taken by a stuck writer: the next tick is an interval away."""
    client = _welcomed(HEARTBEAT, 1 << 20)
    client.send(Credit(1))
    now = 3 * HEARTBEAT
    assert client.tick(now) >= now + HEARTBEAT
