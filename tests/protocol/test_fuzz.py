"""Property tests: whatever a peer sends, decoding and the sessions fail only in the documented way.

Inputs are arbitrary bytes, msgpack-encoded arbitrary values and frame-shaped maps (a real
``type`` with arbitrary fields), and those messages cut short or with one byte changed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from easyjobs.errors import AuthenticationError, ProtocolError
from easyjobs.protocol.frames import FRAME_TYPES, Error, Frame, decode_message
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

FIELD_NAMES = sorted(
    {f.name for cls in FRAME_TYPES.values() for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6) | st.integers(-3, 3), inner, max_size=4),
    max_leaves=16,
)
frame_maps = st.builds(
    lambda name, fields: {"type": name, **fields},
    st.sampled_from(sorted(FRAME_TYPES)),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=4), values, max_size=8),
)
packed = st.lists(values | frame_maps, min_size=1, max_size=3).map(
    lambda objects: b"".join(msgpack.packb(o, use_bin_type=True) for o in objects)
)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A msgpack message cut short, or with one byte replaced."""
    data = draw(packed)
    at = draw(st.integers(0, len(data) - 1))
    if draw(st.booleans()):
        return data[:at]
    return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]


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
