"""The manager's session, sans-I/O: bytes a writer holds count against ``max_backlog`` once
its socket is full, and a write that makes no progress for the heartbeat window closes 4004."""

from __future__ import annotations

import pytest

from easyjobs.errors import ConnectionLost
from easyjobs.protocol.frames import Error, Heartbeat
from easyjobs.protocol.session import (
    CLOSE_BACKLOG,
    MAX_BACKLOG,
    MISSED_HEARTBEATS,
    ClientSession,
    ServerSession,
    State,
)

from .helpers import HEARTBEAT, SECRET, make_client, pump

BIG = Error("internal_error", "x" * 60_000)
"""A frame of about 60 kB."""


def open_pair(max_backlog: int) -> tuple[ServerSession, ClientSession]:
    """An open manager session with this ``max_backlog`` (its writer idle) and its peer."""
    server = ServerSession(SECRET, 0.0, nonce=b"n" * 32, session_id="s1", heartbeat=HEARTBEAT,
                           max_message=1 << 20, max_backlog=max_backlog)
    client = make_client()
    pump(server, client)
    pump(client, server)
    pump(server, client)
    assert server.state is State.OPEN
    return server, client


def open_server(max_backlog: int) -> ServerSession:
    return open_pair(max_backlog)[0]


def test_bytes_being_written_count_once_the_socket_is_full() -> None:
    """While the writer holds unwritten bytes, more than max_backlog held closes 4004."""
    server = open_server(max_backlog=200_000)
    server.send(BIG)
    [message] = server.data_to_write(1.0)  # the writer is now stuck sending it
    server.send(BIG)
    server.send(BIG)
    with pytest.raises(ConnectionLost, match="over 200000 bytes queued"):
        server.send(BIG)
    assert server.close_code == CLOSE_BACKLOG


def test_written_bytes_stop_counting() -> None:
    """Once the writer reports its messages written, the backlog is free again."""
    server = open_server(max_backlog=200_000)
    for _ in range(10):
        server.send(BIG)
        server.send(BIG)
        for message in server.data_to_write(1.0):
            server.written(len(message), 1.0)
    assert server.state is State.OPEN


def test_a_burst_while_the_socket_takes_data_may_reach_max_backlog() -> None:
    """Frames queued before the writer ran (a burst of assignments) may reach MAX_BACKLOG."""
    server = open_server(max_backlog=200_000)
    queued = 0
    with pytest.raises(ConnectionLost):
        while True:
            server.send(BIG)
            queued += 1
    assert queued * 60_000 >= MAX_BACKLOG - 60_000


def test_a_write_without_progress_for_the_window_closes_4004() -> None:
    """A message handed to the writer and not written for 5 heartbeats closes the session,
    though the peer keeps sending heartbeats; progress restarts the clock."""
    server, client = open_pair(max_backlog=1 << 20)
    window = HEARTBEAT * MISSED_HEARTBEATS
    server.send(BIG)
    [message] = server.data_to_write(1.0)
    server.written(len(message) // 2, 4.0)  # some progress: the clock restarts
    for now in (2.0, 4.0, 6.0, 8.0):
        client.send(Heartbeat())
        pump(client, server, now)  # the peer is heard from: no heartbeat timeout
        assert server.tick(now) <= 4.0 + window
        assert server.state is State.OPEN
    server.tick(4.0 + window)
    assert server.state is State.CLOSED and server.close_code == CLOSE_BACKLOG
    assert "no write progress" in str(server.error)
