"""The hand-written vectors in ``proto/vectors``, all run by one table-driven test.

The vectors were written from ``proto/PROTOCOL.md`` and the msgpack format, never dumped from
our encoder, so a failure here means the code and the spec disagree. See the README there for
the file formats.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from easyjobs.errors import ProtocolError
from easyjobs.protocol import auth
from easyjobs.protocol.frames import (
    FRAME_TYPES,
    Frame,
    Hello,
    Welcome,
    decode_message,
    encode_frame,
    frame_to_map,
)
from easyjobs.protocol.session import ClientSession, ServerSession, State

VECTORS = Path(__file__).resolve().parents[2] / "proto" / "vectors"


def _load() -> list[Any]:
    """Every vector of every file as a test case whose id is the vector's name."""
    cases: list[tuple[str, dict[str, Any]]] = [
        (kind, case)
        for kind in ("valid", "invalid", "auth", "credentials")
        for case in json.loads((VECTORS / f"{kind}.json").read_text(encoding="utf-8"))
    ]
    names = [case["name"] for _, case in cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate vector names in {VECTORS}: {duplicates}")
    return [pytest.param(kind, case, id=case["name"]) for kind, case in cases]


def _value(data: Any) -> Any:
    """A JSON value from a vector as the Python value it stands for (``$bytes`` -> bytes)."""
    if isinstance(data, dict):
        if set(data) == {"$bytes"}:
            return bytes.fromhex(data["$bytes"])
        return {key: _value(item) for key, item in data.items()}
    if isinstance(data, list):
        return [_value(item) for item in data]
    return data


def _typed(value: Any) -> Any:
    """``value`` with every type spelt out, so that ``True != 1``, ``5 != 5.0`` and b"" != ""."""
    if isinstance(value, dict):
        return {(type(k).__name__, k): _typed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(item) for item in value])
    return (type(value).__name__, value)


def _frame(form: dict[str, Any]) -> Frame:
    fields = _value(form)
    return FRAME_TYPES[fields.pop("type")](**fields)


def _check_valid(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["hex"])
    frames = decode_message(data)
    assert [_typed(frame_to_map(frame)) for frame in frames] == [
        _typed(_value(form)) for form in case["frames"]
    ]
    if case["canonical"]:
        encoded = b"".join(encode_frame(_frame(form)) for form in case["frames"])
        assert encoded.hex() == data.hex()


def _check_invalid(case: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_message(bytes.fromhex(case["hex"]))
    assert caught.value.code == case["error"]
    assert case["reason"] in str(caught.value)


def _check_auth(case: dict[str, Any]) -> None:
    secret, server_nonce, peer_nonce = (
        bytes.fromhex(case[key]) for key in ("secret", "server_nonce", "peer_nonce")
    )
    if "secret_text" in case:
        assert case["secret_text"].encode("utf-8") == secret
    hello, welcome = bytes.fromhex(case["hello_proof"]), bytes.fromhex(case["welcome_proof"])
    assert auth.hello_proof(secret, server_nonce, peer_nonce) == hello
    assert auth.welcome_proof(secret, server_nonce, peer_nonce) == welcome
    assert auth.proof_matches(hello, hello) and not auth.proof_matches(hello, welcome)
    # The sessions put the same proofs on the wire, with the nonces in the same order.
    server = ServerSession(secret, 0.0, nonce=server_nonce, session_id="s", heartbeat=1.0,
                           max_message=1 << 20)
    client = ClientSession(secret, 0.0, role="worker", name="w", nonce=peer_nonce)
    [challenge] = server.data_to_send(0.0)
    client.receive(challenge, 0.0)
    [hello_message] = client.data_to_send(0.0)
    [hello_frame] = decode_message(hello_message)
    assert isinstance(hello_frame, Hello) and hello_frame.proof == hello
    server.receive(hello_message, 0.0)
    [welcome_message] = server.data_to_send(0.0)
    [welcome_frame] = decode_message(welcome_message)
    assert isinstance(welcome_frame, Welcome) and welcome_frame.proof == welcome
    client.receive(welcome_message, 0.0)
    assert server.state is State.OPEN and client.state is State.OPEN


def _check_credential(case: dict[str, Any]) -> None:
    secret, salt, key, server_nonce, peer_nonce = (
        bytes.fromhex(case[k]) for k in ("manager_secret", "salt", "key", "server_nonce",
                                         "peer_nonce"))
    name = case["credential"]
    assert auth.credential_key(secret, name, salt) == key
    assert auth.credential_token(name, key) == case["token"]
    assert auth.split_secret(case["token"].encode()) == (name, key)
    # The peer configured with the token names the credential in hello and proves it holds
    # the key; the manager finds the key by that name.
    server = ServerSession(secret, 0.0, nonce=server_nonce, session_id="s", heartbeat=1.0,
                           max_message=1 << 20, keys={name: key}.get)
    client = ClientSession(case["token"].encode(), 0.0, role="worker", name="w",
                           nonce=peer_nonce)
    [challenge] = server.data_to_send(0.0)
    client.receive(challenge, 0.0)
    [hello_message] = client.data_to_send(0.0)
    [hello_frame] = decode_message(hello_message)
    assert isinstance(hello_frame, Hello) and hello_frame.credential == name
    assert hello_frame.proof == bytes.fromhex(case["hello_proof"])
    server.receive(hello_message, 0.0)
    [welcome_message] = server.data_to_send(0.0)
    [welcome_frame] = decode_message(welcome_message)
    assert isinstance(welcome_frame, Welcome)
    assert welcome_frame.proof == bytes.fromhex(case["welcome_proof"])
    client.receive(welcome_message, 0.0)
    assert server.state is State.OPEN and client.state is State.OPEN
    assert server.credential == name


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "valid": _check_valid,
    "invalid": _check_invalid,
    "auth": _check_auth,
    "credentials": _check_credential,
}


@pytest.mark.parametrize(("kind", "case"), _load())
def test_vector(kind: str, case: dict[str, Any]) -> None:
    """Valid vectors decode (canonical ones re-encode) exactly; invalid ones are refused."""
    CHECKS[kind](case)
