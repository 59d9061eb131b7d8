"""Hypothesis strategies for hostile wire input, shared by the protocol fuzz tests and the live
manager's: msgpack values, frame-shaped maps (a real or made-up ``type`` with arbitrary fields),
messages of one to three of them, and such messages cut short or with one byte changed."""

from __future__ import annotations

import dataclasses

import msgpack
from hypothesis import strategies as st

from easyjobs.protocol.frames import FRAME_TYPES

FIELD_NAMES = sorted(
    {f.name for cls in FRAME_TYPES.values() for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
)
scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=12) | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6) | st.integers(-3, 3), inner, max_size=4),
    max_leaves=16,
)
frame_maps = st.builds(
    lambda name, fields: {"type": name, **fields},
    st.sampled_from(sorted(FRAME_TYPES)) | st.text(max_size=8),
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
    return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
