"""Property tests: whatever a peer sends, decoding and the sessions fail only in the documented way.

Inputs are arbitrary bytes, msgpack-encoded arbitrary values and frame-shaped maps (a real or
made-up ``type`` with arbitrary fields), and those messages cut short or with one byte changed.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from easyjobs.errors import AuthenticationError, ProtocolError
from easyjobs.protocol.frames import Error, Frame, decode_message
from easyjobs.protocol.session import (
    CLOSE_AUTH_FAILED,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED_VERSION,
    ClientSession,
    ServerSession,
    State,
)

from .helpers import make_client, make_server, open_pair
from .strategies import damaged, packed

messages = st.binary(max_size=300) | packed | damaged()

FUZZ = settings(max_examples=300, deadline=None, database=None)


@FUZZ
@given(messages)
def test_decode_message_returns_frames_or_raises_protocol_error(data: bytes) -> None:
    """decode_message either returns frames or raises ProtocolError, never anything else."""
    try:
        frames = decode_message(data)
    except ProtocolError:
        return
    assert frames and all(isinstance(frame, Frame) for frame in frames)


def _check_session(session: ServerSession | ClientSession, data: bytes) -> None:
    events: Any = session.receive(data, 1.0)
    assert isinstance(events, list) and all(isinstance(e, Frame) for e in events)
    if session.state is State.CLOSED:
        assert session.close_code in {
            CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG, CLOSE_AUTH_FAILED, CLOSE_UNSUPPORTED_VERSION,
        }
        assert isinstance(session.error, (ProtocolError, AuthenticationError))
        queued = [f for m in session.data_to_send(1.0) for f in decode_message(m)]
        assert all(isinstance(frame, Error) for frame in queued)
        assert session.receive(data, 2.0) == []  # nothing is handled after the close


@FUZZ
@given(messages, st.booleans())
def test_server_session_never_raises_on_what_a_peer_sends(data: bytes, opened: bool) -> None:
    """ServerSession.receive records any fault and closes; it never raises."""
    if opened:
        session, _ = open_pair(max_message=256)
    else:
        session = make_server()
    session.data_to_send(0.0)
    _check_session(session, data)


@FUZZ
@given(messages, st.booleans())
def test_client_session_never_raises_on_what_a_manager_sends(data: bytes, opened: bool) -> None:
    """ClientSession.receive records any fault and closes; it never raises."""
    if opened:
        _, session = open_pair(max_message=256)
    else:
        session = make_client()
    _check_session(session, data)
