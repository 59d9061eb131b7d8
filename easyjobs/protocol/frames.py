"""Frames: frozen dataclasses, and the codec between them and msgpack bytes (proto/PROTOCOL.md).

A WebSocket message carries one or more frames, each a msgpack map whose ``type`` names the
frame, concatenated. ``decode_message`` validates everything a peer sent — size, msgpack syntax,
nesting, value types, frame type, required fields — and raises ``ProtocolError`` on the first
fault, so a caller either gets well-formed frames or nothing. ``encode_frame`` raises
``SerializationError`` for values msgpack cannot carry, before anything is queued.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from ..errors import ProtocolError, SerializationError

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE = 1 << 20
HANDSHAKE_MAX_MESSAGE = 4096
MAX_DEPTH = 32


TraceContext = dict[str, str]
"""A W3C Trace Context carrier: ``traceparent`` and, if any, ``tracestate`` (section 5)."""


class Frame:
    """Base of every frame; ``type`` is the wire name."""

    __slots__ = ()
    type: ClassVar[str]


# ----------------------------------------------------------------------------------- handshake


@dataclass(frozen=True, slots=True)
class Challenge(Frame):
    """Server -> peer, first frame: the protocol version and a fresh random nonce."""

    type: ClassVar[str] = "challenge"
    version: int
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Hello(Frame):
    """Peer -> server: who it is and the HMAC proof that it knows the secret (the manager
    secret, or the key of the named ``credential``)."""

    type: ClassVar[str] = "hello"
    version: int
    role: str
    name: str
    nonce: bytes
    proof: bytes
    credential: str | None = None


@dataclass(frozen=True, slots=True)
class Welcome(Frame):
    """Server -> peer: the server's own proof, the heartbeat interval and the message limit."""

    type: ClassVar[str] = "welcome"
    session: str
    proof: bytes
    heartbeat: float
    max_message: int


# --------------------------------------------------------------------------------- both ways


@dataclass(frozen=True, slots=True)
class Heartbeat(Frame):
    """Sent when nothing else was sent for one interval; any frame proves liveness."""

    type: ClassVar[str] = "heartbeat"


@dataclass(frozen=True, slots=True)
class Error(Frame):
    """A request was refused (``ref`` names it) or the connection is about to close."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    ref: int | None = None


# ---------------------------------------------------------------------- peer (client/worker)


@dataclass(frozen=True, slots=True)
class Submit(Frame):
    """Create a job. ``job`` is the caller's id, so re-sending after a reconnect is harmless."""

    type: ClassVar[str] = "submit"
    ref: int
    job: str
    queue: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    parent: str | None = None
    watch: bool = True
    trace: TraceContext | None = None


@dataclass(frozen=True, slots=True)
class Watch(Frame):
    """Ask for the ``result`` frame of a job, now if it has finished, else when it does."""

    type: ClassVar[str] = "watch"
    ref: int
    job: str


@dataclass(frozen=True, slots=True)
class Lookup(Frame):
    """Ask for a job's record; answered by ``job_info``."""

    type: ClassVar[str] = "lookup"
    ref: int
    job: str


@dataclass(frozen=True, slots=True)
class Cancel(Frame):
    """Cancel a job that has not finished; answered by ``job_info`` with its final record."""

    type: ClassVar[str] = "cancel"
    ref: int
    job: str


@dataclass(frozen=True, slots=True)
class ListJobs(Frame):
    """Ask for recent jobs, newest first, optionally filtered; answered by ``job_list``."""

    type: ClassVar[str] = "list_jobs"
    ref: int
    queue: str | None = None
    task: str | None = None
    status: str | None = None
    limit: int | None = None
    before: str | None = None
    queues: list[str] | None = None


@dataclass(frozen=True, slots=True)
class Schedules(Frame):
    """Ask for every cron schedule with its next fire time; answered by ``schedule_info``."""

    type: ClassVar[str] = "schedules"
    ref: int


# ------------------------------------------------------------------------------ worker only


@dataclass(frozen=True, slots=True)
class Register(Frame):
    """Advertise tasks (name, queue, parameters, options) and how many jobs it runs at once."""

    type: ClassVar[str] = "register"
    tasks: list[dict[str, Any]]
    capacity: int | None = None


@dataclass(frozen=True, slots=True)
class Credit(Frame):
    """Allow the manager ``n`` more assignments (flow control)."""

    type: ClassVar[str] = "credit"
    n: int


@dataclass(frozen=True, slots=True)
class Revoke(Frame):
    """Take back ``n`` unused credits (a task that lent its slot wants it back)."""

    type: ClassVar[str] = "revoke"
    n: int


@dataclass(frozen=True, slots=True)
class Pause(Frame):
    """Stop (``paused=True``) or restart new assignments; running jobs continue."""

    type: ClassVar[str] = "pause"
    paused: bool


@dataclass(frozen=True, slots=True)
class Resume(Frame):
    """After a reconnect: jobs this worker is still running from before."""

    type: ClassVar[str] = "resume"
    jobs: list[str]


@dataclass(frozen=True, slots=True)
class Done(Frame):
    """One attempt of a job finished: ``value`` if it succeeded, else ``error``."""

    type: ClassVar[str] = "done"
    job: str
    attempt: int
    status: str
    value: Any = None
    error: dict[str, str] | None = None


# ---------------------------------------------------------------------------- server -> peer


@dataclass(frozen=True, slots=True)
class Accepted(Frame):
    """The submitted job is committed; ``created`` is false when the id already existed."""

    type: ClassVar[str] = "accepted"
    ref: int
    job: str
    created: bool


@dataclass(frozen=True, slots=True)
class JobInfo(Frame):
    """Answer to ``lookup``: the job's record."""

    type: ClassVar[str] = "job_info"
    ref: int
    job: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Result(Frame):
    """A watched job reached a terminal status; pushed, never polled for."""

    type: ClassVar[str] = "result"
    job: str
    status: str
    value: Any = None
    error: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Assign(Frame):
    """Run one attempt of a job; consumes one credit."""

    type: ClassVar[str] = "assign"
    job: str
    queue: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    trace: TraceContext | None = None
    created: float | None = None


@dataclass(frozen=True, slots=True)
class JobList(Frame):
    """Answer to ``list_jobs``: records, newest first; ``next`` is the cursor for more."""

    type: ClassVar[str] = "job_list"
    ref: int
    jobs: list[dict[str, Any]]
    next: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleInfo(Frame):
    """Answer to ``schedules``: ``{queue, task, schedule, timezone, last_fire, next_fire}``."""

    type: ClassVar[str] = "schedule_info"
    ref: int
    schedules: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class DoneAck(Frame):
    """The outcome a worker reported for this attempt is settled (committed, or the job had
    already finished): the worker stops keeping it for re-sending."""

    type: ClassVar[str] = "done_ack"
    job: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Abort(Frame):
    """Stop running this job: it was cancelled. The worker reports nothing for it."""

    type: ClassVar[str] = "abort"
    job: str


FRAME_TYPES: dict[str, type[Frame]] = {
    cls.type: cls
    for cls in (
        Challenge, Hello, Welcome, Heartbeat, Error, Submit, Watch, Lookup, Register,
        Credit, Pause, Resume, Done, Accepted, JobInfo, Result, Assign, Cancel, ListJobs,
        Schedules, JobList, ScheduleInfo, Abort, Revoke, DoneAck,
    )
}

# ------------------------------------------------------------------------- field validation

Check = Callable[[Any], bool]


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def is_plain(value: Any, depth: int) -> bool:
    """True when ``value`` holds only msgpack's basic types, nested at most ``depth`` deep.

    On the hot path (every frame, both ways): exact-type checks first, ``isinstance`` only for
    subclasses such as ``IntEnum`` or ``OrderedDict``.
    """
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth <= 0:
        return False
    if kind is dict or (kind is not list and kind is not tuple and isinstance(value, dict)):
        for key, item in value.items():
            if type(key) not in _SCALARS and not is_plain(key, depth - 1):
                return False
            if type(item) not in _SCALARS and not is_plain(item, depth - 1):
                return False
        return True
    if kind is list or kind is tuple or isinstance(value, (list, tuple)):
        for item in value:
            if type(item) not in _SCALARS and not is_plain(item, depth - 1):
                return False
        return True
    return isinstance(value, (bool, int, float, str, bytes))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def _is_str_to_str(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _is_error_info(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(value.get(key), str) for key in ("type", "message", "traceback")
    )


_CHECKS: dict[str, Check] = {
    "int": _is_int,
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes),
    "bool": lambda v: isinstance(v, bool),
    "Any": lambda v: True,
    "list[Any]": lambda v: isinstance(v, list),
    "list[str]": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
    "list[dict[str, Any]]": lambda v: isinstance(v, list) and all(_is_str_map(i) for i in v),
    "dict[str, Any]": _is_str_map,
    "dict[str, str]": _is_error_info,
    "TraceContext": _is_str_to_str,
}


def _check_for(annotation: str) -> tuple[Check, bool]:
    """The validator for a field annotation, and whether ``None`` is allowed."""
    base, _, none = annotation.partition(" | ")
    return _CHECKS[base], none == "None"


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    check: Check
    nullable: bool
    required: bool
    kind: str
    as_float: bool
    """A float field: an int is read as that float."""


_SCHEMAS: dict[type[Frame], tuple[_Field, ...]] = {
    cls: tuple(
        _Field(
            f.name,
            *_check_for(str(f.type)),
            required=f.default is dataclasses.MISSING,
            kind=str(f.type),
            as_float=str(f.type) in ("float", "float | None"),
        )
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    )
    for cls in FRAME_TYPES.values()
}


_JOB_ID = re.compile(r"[0-9a-f]{32}")
_STATUSES = ("succeeded", "failed")
_JOB_STATUSES = ("waiting", "queued", "running", "retrying", "succeeded", "failed", "cancelled")

_RULES: dict[type[Frame], tuple[Callable[[Any], bool], str]] = {
    Submit: (lambda f: _JOB_ID.fullmatch(f.job) is not None, "job must be 32 lowercase hex digits"),
    Credit: (lambda f: f.n >= 1, "n must be at least 1"),
    Revoke: (lambda f: f.n >= 1, "n must be at least 1"),
    Done: (lambda f: f.status in _STATUSES, "status must be 'succeeded' or 'failed'"),
    Result: (lambda f: f.status in (*_STATUSES, "cancelled"),
             "status must be 'succeeded', 'failed' or 'cancelled'"),
    ListJobs: (lambda f: f.status is None or f.status in _JOB_STATUSES,
               "status must be a job status"),
}
"""Constraints beyond a field's type, from the frame tables of proto/PROTOCOL.md section 5."""


def _describe(value: Any) -> str:
    return type(value).__name__ if value is not None else "nil"


def frame_from_map(data: Any) -> Frame:
    """Validate one decoded msgpack object as a frame; ``ProtocolError`` says what is wrong."""
    if not isinstance(data, dict):
        raise ProtocolError(f"a frame must be a map, not {_describe(data)}")
    name = data.get("type")
    cls = FRAME_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        # The peer's text is cut short: it may be echoed back in an error frame.
        raise ProtocolError(f"unknown frame type {name!r:.60}")
    values: dict[str, Any] = {}
    for field in _SCHEMAS[cls]:
        if field.name not in data:
            if field.required:
                raise ProtocolError(f"{cls.type}: missing field {field.name!r}")
            continue
        value = data[field.name]
        if value is None and (field.nullable or not field.required):
            if field.nullable:
                values[field.name] = None
            continue
        if not field.check(value):
            raise ProtocolError(
                f"{cls.type}: field {field.name!r} must be {field.kind}, not {_describe(value)}"
            )
        # A float field takes an int too (PROTOCOL.md section 2); the frame always holds a float.
        values[field.name] = float(value) if field.as_float else value
    frame = cls(**values)
    rule = _RULES.get(cls)
    if rule is not None and not rule[0](frame):
        raise ProtocolError(f"{cls.type}: {rule[1]}")
    return frame


# ------------------------------------------------------------------------------------- codec


def decode_message(data: bytes, max_message: int = DEFAULT_MAX_MESSAGE) -> list[Frame]:
    """Decode one WebSocket message into its frames, or raise ``ProtocolError``."""
    if len(data) > max_message:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the {max_message}-byte limit")
    if not data:
        raise ProtocolError("empty message")
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1),
        ext_hook=_refuse_ext, timestamp=0,
    )
    unpacker.feed(data)
    frames: list[Frame] = []
    # Not ``for obj in unpacker``: iteration stops quietly at a truncated frame.
    while unpacker.tell() < len(data):
        try:
            obj = unpacker.unpack()
        except msgpack.OutOfData:
            raise ProtocolError("message ends inside a frame") from None
        # TypeError: a map key that msgpack decoded as a list or map (unhashable in Python).
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ProtocolError(f"invalid msgpack: {exc.__class__.__name__}") from None
        if not is_plain(obj, MAX_DEPTH):
            raise ProtocolError(
                f"frame holds a non-basic type or nests deeper than {MAX_DEPTH} levels"
            )
        frames.append(frame_from_map(obj))
    return frames


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension type {code} is not allowed")


def frame_to_map(frame: Frame) -> dict[str, Any]:
    """The frame as a map: ``type`` first, then the fields in declaration order."""
    out: dict[str, Any] = {"type": frame.type}
    for field in _SCHEMAS[type(frame)]:
        out[field.name] = getattr(frame, field.name)
    return out


_packer = msgpack.Packer(use_bin_type=True, datetime=False, strict_types=False)


def encode_frame(frame: Frame, max_message: int = DEFAULT_MAX_MESSAGE) -> bytes:
    """Encode one frame; ``SerializationError`` if a value is not msgpack-able or too big."""
    payload = frame_to_map(frame)
    if not is_plain(payload, MAX_DEPTH):
        raise SerializationError(_unplain_reason(frame))
    try:
        data: bytes = _packer.pack(payload)
    except (TypeError, ValueError, OverflowError) as exc:
        _packer.reset()
        raise SerializationError(f"{frame.type}: {exc}") from None
    if len(data) > max_message:
        raise SerializationError(
            f"{frame.type} frame of {len(data)} bytes exceeds the {max_message}-byte limit"
        )
    return data


def _unplain_reason(frame: Frame) -> str:
    for field in _SCHEMAS[type(frame)]:
        value = getattr(frame, field.name)
        if not is_plain(value, MAX_DEPTH - 1):
            bad = _first_unplain(value, MAX_DEPTH - 1)
            return (
                f"{frame.type}.{field.name} cannot be sent: "
                + (f"{type(bad).__name__} is not msgpack-serializable "
                   "(use None, bool, int, float, str, bytes, list or dict)"
                   if bad is not None else f"nested deeper than {MAX_DEPTH} levels")
            )
    return f"{frame.type} cannot be sent"


def _first_unplain(value: Any, depth: int) -> Any:
    """The first value of a type msgpack cannot carry, or None if the fault is nesting."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return None
    if isinstance(value, (list, tuple, dict)):
        if depth <= 0:
            return None
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        for item in items:
            if not is_plain(item, depth - 1):
                return _first_unplain(item, depth - 1)
        return None
    return value
