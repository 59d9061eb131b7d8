"""ServerSession and ClientSession, fed bytes and clock readings: no sockets, no sleeps."""

from __future__ import annotations

from typing import Any

import pytest

from easyjobs.errors import (
    AuthenticationError,
    ConnectionLost,
    EasyJobsError,
    PermissionDenied,
    ProtocolError,
    SerializationError,
    UnsupportedVersion,
)
from easyjobs.protocol import auth
from easyjobs.protocol.frames import (
    Accepted,
    Assign,
    Challenge,
    Credit,
    Error,
    Frame,
    Heartbeat,
    Hello,
    Result,
    Submit,
    Welcome,
    decode_message,
    encode_frame,
)
from easyjobs.protocol.session import (
    CLOSE_AUTH_FAILED,
    CLOSE_PERMISSION_DENIED,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TIMEOUT,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED_VERSION,
    FATAL_CLOSE_CODES,
    ClientSession,
    ServerSession,
    State,
)

from .helpers import (
    CHALLENGE_BYTES,
    HEARTBEAT,
    JOB,
    PEER_NONCE,
    SECRET,
    SERVER_NONCE,
    make_client,
    make_server,
    open_pair,
    pump,
    sent,
)


def hello(version: int = 1, role: str = "worker", name: str = "w1", nonce: bytes = PEER_NONCE,
          secret: bytes = SECRET) -> bytes:
    proof = auth.hello_proof(secret, SERVER_NONCE, nonce)
    return encode_frame(Hello(version, role, name, nonce, proof))


def assert_protocol_error(session: Any, code: int = CLOSE_PROTOCOL_ERROR) -> None:
    assert session.state is State.CLOSED and session.close_code == code
    assert isinstance(session.error, ProtocolError)
    frames = sent(session)
    assert [type(frame) for frame in frames] == [Error]
    assert isinstance(frames[0], Error) and frames[0].code == "protocol_error"


# ----------------------------------------------------------------------------- handshake


@pytest.mark.parametrize("role", ["worker", "client"])
def test_handshake_opens_both_ends(role: str) -> None:
    """Challenge, hello and welcome open both ends, each learning the other's settings."""
    server = make_server(max_message=50_000)
    client = make_client(role)
    assert server.data_to_send(0.0) == [CHALLENGE_BYTES]
    assert client.receive(CHALLENGE_BYTES, 0.0) == []
    assert client.state is State.AWAIT_WELCOME
    events = pump(client, server)
    assert [type(e) for e in events] == [Hello]
    assert (server.role, server.name, server.max_message) == (role, "w1", 50_000)
    events = pump(server, client)
    assert events == [Welcome("s1", auth.welcome_proof(SECRET, SERVER_NONCE, PEER_NONCE),
                              HEARTBEAT, 50_000)]
    assert (client.state, client.heartbeat, client.max_message) == (State.OPEN, HEARTBEAT, 50_000)


def test_welcome_coalesced_with_other_frames_is_handled() -> None:
    """Frames sent right after the welcome, in the same message, reach the peer's application."""
    server, client = make_server(), make_client()
    pump(server, client)
    pump(client, server)
    server.send(Assign(JOB, "default", "add", [1], {}, 1))
    [message] = server.data_to_send(0.0)
    events = client.receive(message, 0.0)
    assert [type(e) for e in events] == [Welcome, Assign]
    assert client.state is State.OPEN


def test_wrong_secret_closes_4001_and_never_reveals_a_secret() -> None:
    """A wrong proof closes with 4001 'authentication failed'; no secret is in any output."""
    server_secret, client_secret = b"server-secret-123", b"client-secret-456"
    server, client = make_server(secret=server_secret), make_client(secret=client_secret)
    wire = server.data_to_send(0.0)
    client.receive(wire[0], 0.0)
    wire += client.data_to_send(0.0)
    assert server.receive(wire[-1], 0.0) == []
    assert (server.state, server.close_code) == (State.CLOSED, CLOSE_AUTH_FAILED)
    assert server.close_reason == "authentication failed"
    assert isinstance(server.error, AuthenticationError)
    assert server.data_to_send(0.0) == []  # nothing else is said
    text = " ".join([server.close_reason, str(server.error), repr(server.error),
                     *(repr(frame) for message in wire for frame in decode_message(message))])
    for secret in (server_secret, client_secret):
        assert secret not in b"".join(wire)
        assert secret.decode() not in text and secret.hex() not in text


def test_client_detects_manager_without_the_secret() -> None:
    """A welcome whose proof is wrong closes the peer with 4001: it did not reach a manager."""
    server, client = make_server(), make_client()
    pump(server, client)
    client.data_to_send(0.0)
    impostor = encode_frame(Welcome("s1", bytes(32), HEARTBEAT, 1 << 20))
    assert client.receive(impostor, 0.0) == []
    assert (client.state, client.close_code) == (State.CLOSED, CLOSE_AUTH_FAILED)
    assert isinstance(client.error, AuthenticationError)


def test_unsupported_version_closes_4002_with_an_error_frame() -> None:
    """A hello of another version gets an unsupported_version error frame and close 4002."""
    server = make_server()
    server.data_to_send(0.0)
    assert server.receive(hello(version=2), 0.0) == []
    assert server.close_code == CLOSE_UNSUPPORTED_VERSION
    [frame] = sent(server)
    assert isinstance(frame, Error) and frame.code == "unsupported_version"
    # The peer turns that frame into the matching error and close code.
    client = make_client()
    client.receive(CHALLENGE_BYTES, 0.0)
    client.receive(encode_frame(frame), 0.0)
    assert client.close_code == CLOSE_UNSUPPORTED_VERSION
    assert isinstance(client.error, UnsupportedVersion)


def test_challenge_of_another_version_closes_the_peer_4002() -> None:
    """A peer refuses a manager that speaks another protocol version."""
    client = make_client()
    client.receive(encode_frame(Challenge(2, SERVER_NONCE)), 0.0)
    assert client.close_code == CLOSE_UNSUPPORTED_VERSION
    assert isinstance(client.error, UnsupportedVersion)
    assert client.data_to_send(0.0) == []


def test_error_before_the_challenge_closes_the_peer() -> None:
    """A peer accepts an error frame before the challenge and closes with it."""
    client = make_client()
    assert client.receive(encode_frame(Error("internal_error", "shutting down")), 0.0) == []
    assert (client.close_code, str(client.error)) == (CLOSE_PROTOCOL_ERROR, "shutting down")


def test_challenge_with_a_short_nonce_is_refused() -> None:
    """The server nonce must be 32 bytes; a peer closes with 4000 on anything else."""
    client = make_client()
    client.receive(encode_frame(Challenge(1, bytes(8))), 0.0)
    assert client.close_code == CLOSE_PROTOCOL_ERROR
    assert client.data_to_send(0.0) == []


@pytest.mark.parametrize(
    "message",
    [
        hello(role="admin"),
        hello(name=""),
        hello(name="x" * 201),
        hello(nonce=bytes(15)),
        hello(nonce=bytes(65)),
    ],
    ids=["bad-role", "empty-name", "name-201-chars", "nonce-15-bytes", "nonce-65-bytes"],
)
def test_bad_hello_closes_4000(message: bytes) -> None:
    """A hello with a bad role, name length or nonce length is a protocol error."""
    server = make_server()
    server.data_to_send(0.0)
    assert server.receive(message, 0.0) == []
    assert_protocol_error(server)


def test_hello_at_the_limits_is_accepted() -> None:
    """A 200-character name and 16- or 64-byte nonces are within the limits."""
    for nonce in (bytes(16), bytes(64)):
        server = make_server()
        server.data_to_send(0.0)
        server.receive(hello(name="é" * 200, nonce=nonce), 0.0)
        assert server.state is State.OPEN and server.name == "é" * 200


@pytest.mark.parametrize(
    "frame", [Heartbeat(), Submit(1, JOB, "default", "add", [], {}), Credit(1)],
    ids=["heartbeat", "submit", "credit"],
)
def test_server_refuses_frames_before_hello(frame: Frame) -> None:
    """Before the hello the manager accepts nothing else: error frame and close 4000."""
    server = make_server()
    server.data_to_send(0.0)
    assert server.receive(encode_frame(frame), 0.0) == []
    assert_protocol_error(server)


@pytest.mark.parametrize(
    "frame", [Heartbeat(), Accepted(1, JOB, True), Welcome("s1", bytes(32), 1.0, 4096)],
    ids=["heartbeat", "accepted", "welcome-before-challenge"],
)
def test_peer_refuses_frames_before_the_handshake_is_done(frame: Frame) -> None:
    """Before it is open a peer accepts only the handshake (and error): close 4000."""
    client = make_client()
    assert client.receive(encode_frame(frame), 0.0) == []
    assert client.close_code == CLOSE_PROTOCOL_ERROR
    assert client.data_to_send(0.0) == []  # the manager would not read an error frame yet


def test_client_role_sending_a_worker_frame_is_a_protocol_error() -> None:
    """A peer with role client that sends credit gets an error frame and close 4000."""
    server, client = open_pair(role="client")
    client.send(Credit(1))
    assert pump(client, server) == []
    assert_protocol_error(server)


def test_worker_role_may_send_worker_frames() -> None:
    """The same credit frame from a worker reaches the manager's application."""
    server, client = open_pair(role="worker")
    client.send(Credit(3))
    assert pump(client, server) == [Credit(3)]


def test_second_hello_is_a_protocol_error() -> None:
    """The handshake happens once; a hello on an open connection closes it."""
    server, _ = open_pair()
    server.data_to_send(0.0)
    server.receive(hello(), 0.0)
    assert_protocol_error(server)


# ----------------------------------------------------------------------------- limits


def test_message_over_the_handshake_limit_closes_1009() -> None:
    """Before the handshake a message over 4,096 bytes closes with 1009."""
    server = make_server()
    server.data_to_send(0.0)
    assert server.receive(b"\x80" * 4097, 0.0) == []
    assert_protocol_error(server, CLOSE_TOO_BIG)


def test_message_over_max_message_closes_1009() -> None:
    """Once open a message over ``max_message`` closes with 1009, one at the limit is decoded."""
    server, _ = open_pair(max_message=100)
    # {type: "heartbeat", x: <80 characters>}: 20 bytes of header and 80 of padding.
    exactly = bytes.fromhex("82 a4 74797065 a9 686561727462656174 a1 78 d9 50") + b"a" * 80
    assert len(exactly) == 100
    server.receive(exactly, 0.0)
    assert server.state is State.OPEN
    server.receive(exactly + b"\x80", 0.0)
    assert_protocol_error(server, CLOSE_TOO_BIG)


def test_garbage_after_open_closes_4000_and_stops_processing() -> None:
    """Bad bytes queue an error frame and close 4000; nothing after them is handled."""
    server, client = open_pair()
    submit = encode_frame(Submit(1, JOB, "default", "add", [], {}))
    assert server.receive(submit + b"\xc1", 0.0) == []  # the whole message is refused
    assert_protocol_error(server)
    assert server.receive(submit, 0.0) == []


def test_frames_after_a_refused_frame_are_not_handled() -> None:
    """In one message, frames before a refused one are handed on and those after are not."""
    server, client = open_pair(role="client")
    submit = Submit(1, JOB, "default", "add", [], {})
    client.send(submit)
    client.send(Credit(1))
    client.send(submit)
    assert pump(client, server) == [submit]
    assert_protocol_error(server)


def test_text_message_is_a_protocol_error() -> None:
    """Every message is binary; a text message closes with 4000."""
    server, _ = open_pair()
    server.data_to_send(0.0)
    assert server.receive("hello", 0.0) == []
    assert_protocol_error(server)


def test_unknown_frame_type_is_quoted_only_briefly() -> None:
    """An error frame quotes at most a short piece of what the peer sent, so it always fits."""
    server = make_server()
    server.data_to_send(0.0)
    # {type: <4,000 NUL characters>} - its repr would be four times longer than the limit.
    server.receive(bytes.fromhex("81 a4 74797065 da 0fa0") + bytes(4000), 0.0)
    assert server.close_code == CLOSE_PROTOCOL_ERROR
    [message] = server.data_to_send(0.0)
    assert len(message) < 300


# ----------------------------------------------------------------------------- heartbeats


def test_tick_sends_a_heartbeat_after_one_silent_interval() -> None:
    """A side that sent nothing for one interval sends a heartbeat; sending resets the timer."""
    server, _ = open_pair()
    assert server.tick(0.5) == 1.0
    assert server.data_to_send(0.5) == []
    assert server.tick(1.0) == 2.0
    assert sent(server, 1.0) == [Heartbeat()]
    server.send(Result(JOB, "succeeded", 1))
    server.data_to_send(1.7)
    assert server.tick(2.0) == 2.7
    assert server.data_to_send(2.0) == []


def test_heartbeats_are_not_handed_to_the_application() -> None:
    """A received heartbeat only proves liveness."""
    server, client = open_pair()
    client.tick(1.0)
    assert pump(client, server, 1.0) == []
    assert server.state is State.OPEN


def test_peer_silent_for_five_intervals_is_dead() -> None:
    """Nothing received for 5 heartbeat intervals closes with 4003; receiving resets the clock."""
    server, client = open_pair()
    client.tick(3.0)
    pump(client, server, 3.0)
    server.tick(7.9)
    assert server.state is State.OPEN
    server.data_to_send(7.9)
    server.tick(8.0)
    assert (server.state, server.close_code) == (State.CLOSED, CLOSE_TIMEOUT)
    assert server.data_to_send(8.0) == []  # no error frame: the peer is gone


def test_handshake_timeout_closes_the_server_4003() -> None:
    """A peer that does not complete the handshake within 10 seconds is closed with 4003."""
    server = make_server()
    server.data_to_send(0.0)
    assert server.tick(1.0) == 3.0  # ticks go on during the handshake (every 10 s / 5)
    assert server.tick(9.9) == 10.0
    assert server.state is State.AWAIT_HELLO
    server.tick(10.0)
    assert server.close_code == CLOSE_TIMEOUT


def test_handshake_timeout_counts_from_the_start_on_the_peer() -> None:
    """The peer's 10 seconds run from its start, not from the challenge."""
    server, client = make_server(), make_client()
    pump(server, client, 6.0)
    client.data_to_send(6.0)
    client.tick(9.9)
    assert client.state is State.AWAIT_WELCOME
    client.tick(10.0)
    assert client.close_code == CLOSE_TIMEOUT
    assert client.data_to_send(10.0) == []


# ----------------------------------------------------------------------------- sending


def test_data_to_send_coalesces_frames_into_one_message() -> None:
    """Several queued frames go out as one message, in order."""
    server, client = open_pair()
    frames = [Credit(1), Credit(2), Heartbeat()]
    for frame in frames:
        client.send(frame)
    [message] = client.data_to_send(0.0)
    assert message == b"".join(encode_frame(frame) for frame in frames)
    assert client.data_to_send(0.0) == []


def test_data_to_send_splits_at_max_message() -> None:
    """Frames are coalesced only up to ``max_message``; a frame is never split."""
    server, client = open_pair(max_message=40)
    credit = encode_frame(Credit(1))
    assert len(credit) == 16
    for _ in range(5):
        client.send(Credit(1))
    messages = client.data_to_send(0.0)
    assert messages == [credit * 2, credit * 2, credit]
    assert [type(f) for m in messages for f in server.receive(m, 0.0)] == [Credit] * 5


def test_send_after_close_raises_connection_lost() -> None:
    """Nothing can be queued once the session is closed."""
    server, _ = open_pair()
    server.close()
    with pytest.raises(ConnectionLost):
        server.send(Heartbeat())


def test_frames_queued_before_close_are_still_sent() -> None:
    """close() keeps what was already queued, so a last frame reaches the peer."""
    server, client = open_pair()
    server.send(Error("internal_error", "going away"))
    server.close(1001, "shutting down")
    assert (server.close_code, server.close_reason) == (1001, "shutting down")
    assert pump(server, client) == [Error("internal_error", "going away")]


@pytest.mark.parametrize(
    "args",
    [[object()], [{1, 2}], [b"x" * 2_000_000]],
    ids=["object", "set", "over-max-message"],
)
def test_send_of_an_unsendable_value_raises_and_queues_nothing(args: list[Any]) -> None:
    """A value msgpack cannot carry, or a frame over the limit, raises SerializationError."""
    server, client = open_pair()
    with pytest.raises(SerializationError):
        client.send(Submit(1, JOB, "default", "add", args, {}))
    assert client.data_to_send(0.0) == []
    assert client.state is State.OPEN


def test_send_of_too_deep_a_value_raises() -> None:
    """A frame that would nest deeper than 32 levels is never sent."""
    _, client = open_pair()
    deep: list[Any] = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(SerializationError, match="nested deeper than 32"):
        client.send(Submit(1, JOB, "default", "add", deep, {}))
    assert client.data_to_send(0.0) == []


def test_tuples_encode_as_arrays() -> None:
    """A tuple is sent as a msgpack array and arrives as a list."""
    server, client = open_pair()
    server.send(Assign(JOB, "default", "add", (1, (2, 3)), {}, 1))  # type: ignore[arg-type]
    [message] = server.data_to_send(0.0)
    assert bytes.fromhex("a4 61726773 92 01 92 02 03") in message
    [frame] = client.receive(message, 0.0)
    assert isinstance(frame, Assign) and frame.args == [1, [2, 3]]


def test_a_peer_that_stops_reading_is_dropped_4004() -> None:
    """Frames queued beyond MAX_BACKLOG (the writer is not draining) close the session 4004;
    the frame that overflowed raises ConnectionLost instead of vanishing."""
    from easyjobs.protocol.session import CLOSE_BACKLOG, MAX_BACKLOG

    server, _ = open_pair()
    big = Error("internal_error", "x" * 60_000)
    queued = 0
    with pytest.raises(ConnectionLost):
        while True:
            server.send(big)
            queued += 1
    assert queued * 60_000 >= MAX_BACKLOG - 60_000
    assert server.close_code == CLOSE_BACKLOG and server.state is State.CLOSED


# ----------------------------------------------------------------------------- credentials

KEY = bytes(range(100, 132))
TOKEN = auth.credential_token("etl", KEY).encode()


def handshake(server: ServerSession, client: ClientSession) -> list[bytes]:
    """Challenge then hello; every message that crossed, the server's answers last."""
    wire = server.data_to_send(0.0)
    client.receive(wire[0], 0.0)
    wire += client.data_to_send(0.0)
    server.receive(wire[-1], 0.0)
    return wire


def assert_no_key_in(texts: list[str], wire: list[bytes]) -> None:
    key_text = TOKEN.decode().rsplit(".", 1)[1]
    for text in texts:
        assert key_text not in text and KEY.hex() not in text and repr(KEY) not in text
    assert KEY not in b"".join(wire) and TOKEN not in b"".join(wire)


@pytest.mark.parametrize("known", [{}, {"etl": bytes(32)}], ids=["unknown name", "wrong key"])
def test_a_credential_not_proven_closes_4001_naming_it_and_no_key(known: dict[str, bytes]) -> None:
    """An unknown name and a wrong key look alike: 4001, no welcome, nothing else said; the
    error names the credential (for the log), never a key."""
    asked: list[str] = []

    def keys(name: str) -> bytes | None:
        asked.append(name)
        return known.get(name)

    server, client = make_server(keys=keys), make_client(secret=TOKEN)
    wire = handshake(server, client)
    assert asked == ["etl"]
    assert (server.state, server.close_code) == (State.CLOSED, CLOSE_AUTH_FAILED)
    assert server.data_to_send(0.0) == []
    assert server.credential == "" and server.role == ""
    assert isinstance(server.error, AuthenticationError)
    assert "'etl'" in str(server.error)
    assert_no_key_in([str(server.error), repr(server.error), server.close_reason], wire)


def test_a_credential_proven_opens_with_its_key_not_the_manager_secret() -> None:
    """The key found by name checks the proof; the welcome proves the manager knows it too."""
    server, client = make_server(keys={"etl": KEY}.get), make_client(secret=TOKEN)
    handshake(server, client)
    pump(server, client)
    assert server.state is State.OPEN and client.state is State.OPEN
    assert server.credential == "etl"


def test_the_bare_key_without_its_name_is_not_the_manager_secret() -> None:
    """A key configured without the token's name is checked against the manager secret: 4001."""
    server, client = make_server(keys={"etl": KEY}.get), make_client(secret=KEY)
    handshake(server, client)
    assert server.close_code == CLOSE_AUTH_FAILED


def test_a_refused_role_gets_permission_denied_before_any_welcome_and_4005() -> None:
    """``admit`` refusing a proven credential: an error frame (no welcome), close 4005, and the
    peer ends with PermissionDenied, 4005 (fatal: it does not reconnect)."""
    asked: list[tuple[str, str]] = []

    def admit(credential: str, role: str) -> EasyJobsError | None:
        asked.append((credential, role))
        return PermissionDenied("credential 'etl' (worker) may not connect as a client")

    server = make_server(keys={"etl": KEY}.get, admit=admit)
    client = make_client("client", secret=TOKEN)
    handshake(server, client)
    assert asked == [("etl", "client")]
    assert (server.state, server.close_code) == (State.CLOSED, CLOSE_PERMISSION_DENIED)
    assert server.credential == ""
    answer = server.data_to_send(0.0)
    frames = [frame for message in answer for frame in decode_message(message)]
    assert [type(frame) for frame in frames] == [Error]
    assert isinstance(frames[0], Error) and frames[0].code == "permission_denied"
    assert "may not connect as a client" in frames[0].message
    for message in answer:
        assert client.receive(message, 0.0) == []
    assert (client.state, client.close_code) == (State.CLOSED, CLOSE_PERMISSION_DENIED)
    assert isinstance(client.error, PermissionDenied)
    assert CLOSE_PERMISSION_DENIED in FATAL_CLOSE_CODES


def test_admit_allowing_opens_the_session() -> None:
    server = make_server(keys={"etl": KEY}.get, admit=lambda credential, role: None)
    client = make_client(secret=TOKEN)
    handshake(server, client)
    pump(server, client)
    assert server.state is State.OPEN and client.state is State.OPEN


def test_a_hello_without_a_credential_uses_the_manager_secret() -> None:
    """No name in hello: ``keys`` is not asked, the manager secret checks the proof, and
    ``admit`` is asked about the manager secret ("")."""
    asked: list[str] = []
    admitted: list[tuple[str, str]] = []

    def keys(name: str) -> bytes | None:
        asked.append(name)
        return KEY

    def admit(credential: str, role: str) -> EasyJobsError | None:
        admitted.append((credential, role))
        return None

    server, client = make_server(keys=keys, admit=admit), make_client()
    wire = handshake(server, client)
    [hello_frame] = decode_message(wire[1])
    assert isinstance(hello_frame, Hello) and hello_frame.credential is None
    pump(server, client)
    assert server.state is State.OPEN and client.state is State.OPEN
    assert asked == [] and admitted == [("", "worker")] and server.credential == ""
    # The manager secret is not a key of any credential: without it the proof fails.
    other = make_server(secret=b"another-secret", keys=keys)
    handshake(other, make_client())
    assert other.close_code == CLOSE_AUTH_FAILED


def test_a_token_shaped_secret_sends_its_name_and_proves_with_its_key() -> None:
    client = make_client(secret=TOKEN)
    client.receive(CHALLENGE_BYTES, 0.0)
    [hello_frame] = sent(client)
    assert isinstance(hello_frame, Hello) and hello_frame.credential == "etl"
    assert hello_frame.proof == auth.hello_proof(KEY, SERVER_NONCE, PEER_NONCE)


def test_a_malformed_token_is_sent_as_a_secret_without_a_name() -> None:
    malformed = b"ej1.etl.!!!!"
    client = make_client(secret=malformed)
    client.receive(CHALLENGE_BYTES, 0.0)
    [hello_frame] = sent(client)
    assert isinstance(hello_frame, Hello) and hello_frame.credential is None
    assert hello_frame.proof == auth.hello_proof(malformed, SERVER_NONCE, PEER_NONCE)
