"""Hostile input to a live manager over real WebSockets: it closes the offender, serves the rest.

Hypothesis generates arbitrary bytes, text, msgpack values and frame-shaped maps (a real ``type``
with arbitrary fields), whole or damaged, and sends them before or after a valid handshake. After
every example a client still calls a task on a worker that stayed connected throughout, and the
manager has logged no error (an exception escaping a connection handler would be one).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgpack  # type: ignore[import-untyped]
import pytest
import uvicorn
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from easyjobs import EasyJobsClient, EasyJobsManager, EasyJobsWorker
from easyjobs.protocol.auth import hello_proof, new_nonce
from easyjobs.protocol.frames import (
    FRAME_TYPES,
    Frame,
    Lookup,
    Register,
    Result,
    Submit,
    decode_message,
    encode_frame,
)
from easyjobs.protocol.session import ClientSession, State
from easyjobs.workers.link import WS_PATH

from .conftest import FAST_BACKOFF
from .processes import handshake
from .protocol.strategies import damaged, packed, values
from .utils import SECRET, TIMEOUT, wait_until

QUEUE = "LIVE"
MAX_MESSAGE = 64 * 1024
HANDSHAKE_MAX = 4096
HANDSHAKE_TIMEOUT = 0.5
PROBE_REF = 987_654_321
WORKER_NAME = "steady-worker"

# What the manager may close an offender with (PROTOCOL.md section 9).
CLOSED_BEFORE_HANDSHAKE = {1009, 4000, 4001, 4002}
CLOSED_AFTER_HANDSHAKE = {1009, 4000}


@dataclass
class Live:
    """A manager on a real uvicorn server, a worker and a client connected to it."""

    port: int
    manager: EasyJobsManager
    worker: EasyJobsWorker
    client: EasyJobsClient

    @property
    def uri(self) -> str:
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    """The mesh under attack; a short handshake timeout and a 64 KiB message limit."""
    app = Starlette()
    manager = EasyJobsManager(app, SECRET, db_path=str(tmp_path / "live.db"),
                              max_message=MAX_MESSAGE, handshake_timeout=HANDSHAKE_TIMEOUT)
    await manager.start()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off"))
    serving = asyncio.get_running_loop().create_task(server.serve())
    await wait_until(lambda: server.started or serving.done(), what="uvicorn to start")
    port = server.servers[0].sockets[0].getsockname()[1]

    worker = EasyJobsWorker(None, None, "127.0.0.1", port, SECRET, QUEUE, 4,
                            name=WORKER_NAME, backoff=FAST_BACKOFF)

    @worker.task()
    async def echo(value: int) -> int:
        return value

    client = EasyJobsClient("127.0.0.1", port, SECRET, backoff=FAST_BACKOFF)
    await worker.start()
    await client.connect()
    await submit_known_jobs(f"ws://127.0.0.1:{port}{WS_PATH}")
    try:
        yield Live(port, manager, worker, client)
    finally:
        await client.close()
        await worker.stop(grace=0)
        await manager.close()
        server.should_exit = True
        await asyncio.wait_for(serving, TIMEOUT)


KNOWN_JOBS = [f"{i:032x}" for i in range(1, 4)]
"""Finished jobs with these ids exist, so hostile frames can name real jobs."""


async def submit_known_jobs(uri: str) -> None:
    """Run ``echo`` under each id of ``KNOWN_JOBS`` and wait for the results."""
    async with connect(uri) as ws:
        session = await handshake(ws, "client")
        for ref, job in enumerate(KNOWN_JOBS):
            session.send(Submit(ref, job, QUEUE, "echo", [ref], {}, None, True))
        for message in session.data_to_send():
            await ws.send(message)
        results: set[str] = set()
        while len(results) < len(KNOWN_JOBS):
            data = await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert isinstance(data, bytes)
            results |= {f.job for f in session.receive(data, 0.0) if isinstance(f, Result)}


# ------------------------------------------------------------------------------ speaking

async def send_all(ws: ClientConnection, messages: list[bytes | str]) -> None:
    """Send until the manager closes the connection (later messages may then be refused)."""
    for message in messages:
        try:
            await ws.send(message)
        except ConnectionClosed:
            return


async def outcome(ws: ClientConnection, probe: bool) -> int | None:
    """The manager's close code, or None if the connection stayed open and answered a probe.

    With ``probe``, a ``lookup`` goes after the garbage: its answer proves the manager read
    everything before it and kept the connection.
    """
    if probe:
        try:
            await ws.send(encode_frame(Lookup(PROBE_REF, "0" * 32)))
        except ConnectionClosed:
            pass

    async def read() -> int | None:
        try:
            while True:
                data = await ws.recv()
                assert isinstance(data, bytes), "the manager sent a text message"
                frames = decode_message(data, MAX_MESSAGE)
                if probe and any(getattr(f, "ref", None) == PROBE_REF for f in frames):
                    return None
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "the manager dropped the TCP connection without a close"
            return exc.rcvd.code

    return await asyncio.wait_for(read(), TIMEOUT)


def assert_healthy_log(caplog: pytest.LogCaptureFixture) -> None:
    """No error was logged, and the steady worker never had to reconnect."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert not any(WORKER_NAME in r.getMessage() and "connected to manager" in r.getMessage()
                   for r in caplog.records)


async def assert_still_serving(live: Live, value: int) -> None:
    """A call through the steady worker succeeds, and no offender is left in the manager."""
    assert await asyncio.wait_for(live.client.call(QUEUE, "echo", value), TIMEOUT) == value
    core = live.manager.core
    await wait_until(
        lambda: not any(p.name.startswith("fuzz-") for p in core.peers.by_id.values())
        and not any(w.name.startswith("fuzz-") for w in core.dispatcher.workers.values()),
        what="the manager to forget closed connections",
    )


# ------------------------------------------------------------------------------ garbage

messages = st.lists(
    st.binary(max_size=300) | packed | damaged() | st.text(max_size=50)
    | st.binary(min_size=HANDSHAKE_MAX - 8, max_size=HANDSHAKE_MAX + 8),
    min_size=1, max_size=3,
)

SERVER_FRAMES = {"challenge", "hello", "welcome", "accepted", "job_info", "result", "assign",
                 "job_list", "schedule_info", "abort"}
"""Frames only the manager sends (or the handshake's): not what an open peer would send."""

job_ids = st.sampled_from(KNOWN_JOBS) | st.text("0123456789abcdef", min_size=32, max_size=32)
words = st.sampled_from([QUEUE, "echo", "nope", "DEFAULT"]) | st.text(min_size=1, max_size=8)
dicts = st.dictionaries(st.text(max_size=6), values, max_size=4)
BY_KIND: dict[str, st.SearchStrategy[object]] = {
    "int": st.integers(0, 2**31),
    "float": st.floats(allow_nan=False),
    "str": words,
    "bytes": st.binary(max_size=40),
    "bool": st.booleans(),
    "Any": values,
    "list[Any]": st.lists(values, max_size=3),
    "list[str]": st.lists(job_ids | words, max_size=3),
    "list[dict[str, Any]]": st.lists(dicts, max_size=2),
    "dict[str, Any]": dicts,
    "dict[str, str]": st.fixed_dictionaries(
        {"type": words, "message": st.text(max_size=20), "traceback": st.text(max_size=20)}),
}
BY_NAME: dict[str, st.SearchStrategy[object]] = {
    "job": job_ids,
    "parent": st.none() | job_ids,
    "status": st.sampled_from(["succeeded", "failed", "queued", "running", "nonsense"]),
}


def field_strategy(field: dataclasses.Field[object]) -> st.SearchStrategy[object]:
    if field.name in BY_NAME:
        return BY_NAME[field.name]
    base, _, none = str(field.type).partition(" | ")
    strategy = BY_KIND.get(base, values)
    return st.none() | strategy if none else strategy


def well_formed(cls: type[Frame]) -> st.SearchStrategy[bytes]:
    """Frames of ``cls`` with fields of the right types (and names of real jobs and tasks)."""
    fields = {f.name: field_strategy(f) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return st.fixed_dictionaries(fields).map(
        lambda values: msgpack.packb({"type": cls.type, **values}, use_bin_type=True))


peer_frames = st.one_of(*(well_formed(cls) for name, cls in sorted(FRAME_TYPES.items())
                          if name not in SERVER_FRAMES))
frame_messages = st.lists(st.lists(peer_frames, min_size=1, max_size=4).map(b"".join),
                          min_size=1, max_size=3)

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(garbage=messages)
async def test_garbage_before_the_handshake_closes_only_that_connection(
    live: Live, caplog: pytest.LogCaptureFixture, garbage: list[bytes | str],
) -> None:
    """Garbage instead of a hello is closed with a documented code; everyone else is served."""
    async with connect(live.uri, max_size=None, compression=None) as ws:
        await ws.recv()  # the challenge
        await send_all(ws, garbage)
        assert await outcome(ws, probe=False) in CLOSED_BEFORE_HANDSHAKE
    await assert_still_serving(live, len(garbage))
    assert_healthy_log(caplog)


@FUZZ
@given(role=st.sampled_from(["client", "worker"]), garbage=messages)
async def test_garbage_after_a_valid_handshake_never_harms_the_manager(
    live: Live, caplog: pytest.LogCaptureFixture, role: str, garbage: list[bytes | str],
) -> None:
    """Authenticated garbage is refused (or, if it is valid, served); the mesh keeps working."""
    async with connect(live.uri, max_size=None, compression=None) as ws:
        await handshake(ws, role)
        await send_all(ws, garbage)
        code = await outcome(ws, probe=True)
        event(f"{role}: {'still open' if code is None else f'closed {code}'}")
        assert code is None or code in CLOSED_AFTER_HANDSHAKE
    await assert_still_serving(live, len(garbage))
    assert_healthy_log(caplog)


@FUZZ
@given(role=st.sampled_from(["client", "worker"]), frames=frame_messages)
async def test_well_formed_hostile_frames_never_harm_the_manager(
    live: Live, caplog: pytest.LogCaptureFixture, role: str, frames: list[bytes],
) -> None:
    """Valid frames with hostile contents (other jobs' ids, odd credit, stray done/resume)."""
    async with connect(live.uri, max_size=None, compression=None) as ws:
        await handshake(ws, role)
        await send_all(ws, list(frames))
        code = await outcome(ws, probe=True)
        event(f"{role}: {'still open' if code is None else f'closed {code}'}")
        assert code is None or code in CLOSED_AFTER_HANDSHAKE
    await assert_still_serving(live, len(frames))
    assert_healthy_log(caplog)
    results = await asyncio.gather(*(live.client.result(job, TIMEOUT) for job in KNOWN_JOBS))
    assert results == list(range(len(KNOWN_JOBS)))


# ------------------------------------------------------------------------------ explicit cases

async def closed_with(ws: ClientConnection, received: list[bytes | str] | None = None
                      ) -> tuple[int, str]:
    """Read (into ``received``) until the manager closes; its (code, reason)."""

    async def read() -> tuple[int, str]:
        try:
            while True:
                message = await ws.recv()
                if received is not None:
                    received.append(message)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "the manager dropped the TCP connection without a close"
            return exc.rcvd.code, exc.rcvd.reason

    return await asyncio.wait_for(read(), TIMEOUT)


async def test_connection_that_never_says_hello_is_closed_after_the_handshake_timeout(
    live: Live,
) -> None:
    """Silence after the challenge: closed with 4003 once the handshake timeout passes."""
    loop = asyncio.get_running_loop()
    async with connect(live.uri) as ws:
        await ws.recv()
        opened = loop.time()
        assert await closed_with(ws) == (4003, "handshake timeout")
        assert loop.time() - opened >= HANDSHAKE_TIMEOUT * 0.9
    await assert_still_serving(live, 1)


async def test_wrong_proof_is_closed_with_4001_authentication_failed(live: Live) -> None:
    """A hello proving the wrong secret gets 4001 'authentication failed' and nothing else."""
    async with connect(live.uri) as ws:
        session = ClientSession(b"not-the-secret", 0.0, role="worker", name="intruder",
                                nonce=new_nonce())
        data = await ws.recv()
        assert isinstance(data, bytes)
        session.receive(data, 0.0)
        for message in session.data_to_send():
            await ws.send(message)
        received: list[bytes | str] = []
        assert await closed_with(ws, received) == (4001, "authentication failed")
        assert received == []
    await assert_still_serving(live, 2)


async def test_unsupported_version_is_closed_with_4002(live: Live) -> None:
    """A hello for protocol version 2 gets an unsupported_version error, then close 4002."""
    async with connect(live.uri) as ws:
        data = await ws.recv()
        assert isinstance(data, bytes)
        challenge = msgpack.unpackb(data)
        nonce = new_nonce()
        await ws.send(msgpack.packb({
            "type": "hello", "version": 2, "role": "worker", "name": "from-the-future",
            "nonce": nonce, "proof": hello_proof(SECRET.encode(), challenge["nonce"], nonce),
        }, use_bin_type=True))
        error = msgpack.unpackb(await ws.recv())
        assert (error["type"], error["code"]) == ("error", "unsupported_version")
        code, _ = await closed_with(ws)
        assert code == 4002
    await assert_still_serving(live, 3)


async def test_client_role_sending_register_is_closed_with_4000(live: Live) -> None:
    """A peer that said it is a client may not advertise tasks: protocol error, 4000."""
    async with connect(live.uri) as ws:
        session = await handshake(ws, "client")
        await ws.send(encode_frame(Register([])))
        code, reason = await closed_with(ws)
        assert code == 4000 and "register" in reason
        assert session.state is State.OPEN  # our side saw nothing wrong
    await assert_still_serving(live, 4)


@pytest.mark.parametrize("after_handshake", [False, True])
async def test_text_message_is_closed_with_4000(live: Live, after_handshake: bool) -> None:
    """Frames are binary: a text message is a protocol error, before or after the handshake."""
    async with connect(live.uri) as ws:
        if after_handshake:
            await handshake(ws, "worker")
        else:
            await ws.recv()
        await ws.send('{"type": "hello"}')
        assert (await closed_with(ws))[0] == 4000
    await assert_still_serving(live, 5)


@pytest.mark.parametrize(("after_handshake", "size"), [(False, HANDSHAKE_MAX + 1),
                                                       (True, MAX_MESSAGE + 1)])
async def test_oversized_message_is_closed_with_1009(
    live: Live, after_handshake: bool, size: int,
) -> None:
    """One byte over the limit (4 KiB before the handshake, max_message after) closes with 1009."""
    async with connect(live.uri, max_size=None, compression=None) as ws:
        if after_handshake:
            await handshake(ws, "client")
        else:
            await ws.recv()
        await ws.send(b"\x00" * size)
        assert (await closed_with(ws))[0] == 1009
    await assert_still_serving(live, 6)


async def test_many_garbage_connections_at_once_leave_the_mesh_working(live: Live) -> None:
    """Fifty offenders at the same time, half of them authenticated: the mesh keeps serving."""

    async def offend(i: int) -> int | None:
        async with connect(live.uri, max_size=None, compression=None) as ws:
            if i % 2:
                await handshake(ws, "worker")
            else:
                await ws.recv()
            await ws.send(bytes([0xC1]) * (i + 1))  # 0xc1 is never valid msgpack
            return await outcome(ws, probe=False)

    codes = await asyncio.gather(*(offend(i) for i in range(50)),
                                 *(live.client.call(QUEUE, "echo", i) for i in range(50)))
    assert set(codes[:50]) == {4000}
    assert codes[50:] == list(range(50))
    await assert_still_serving(live, 7)
