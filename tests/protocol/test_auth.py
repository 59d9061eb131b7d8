"""Credential tokens, sans I/O: what ``split_secret`` takes for a token and what it leaves as a
manager secret."""

from __future__ import annotations

import pytest

from easyjobs.protocol import auth

KEY = bytes(range(32))
TOKEN = auth.credential_token("etl-worker_1", KEY)


def test_a_token_splits_into_its_name_and_key() -> None:
    assert TOKEN.startswith("ej1.etl-worker_1.") and "=" not in TOKEN
    assert auth.split_secret(TOKEN.encode()) == ("etl-worker_1", KEY)


def test_a_plain_secret_is_the_manager_secret() -> None:
    assert auth.split_secret(b"s3cret") == ("", b"s3cret")


@pytest.mark.parametrize("secret", [
    "ej2.etl.AAAA",  # another prefix
    "EJ1.etl.AAAA",
    "ej1etl.AAAA",
    "ej1.AAAA",  # no name
    "ej1..AAAA",
    "ej1.na me.AAAA",  # a name with characters a name may not hold
    "ej1.na/me.AAAA",
    "ej1.n\u00e9.AAAA",
    "ej1.a.b.AAAA",
    "ej1." + "n" * 65 + ".AAAA",  # a name too long
    "ej1.etl.",  # no key
    "ej1.etl.A",  # not base64: one character too many
    "ej1.etl.AAAAA",
    "ej1.etl.!!!!",  # characters base64url does not have, which a lax decoder skips
    "ej1.etl.AA+/",
    "ej1.etl.AA AA",
    "ej1.etl.AAAA=",  # padding: tokens carry none
    "ej1.etl.A=AA",
])
def test_a_malformed_token_is_taken_as_a_manager_secret(secret: str) -> None:
    """Nothing half-parsed: the whole secret, unchanged, and no credential name."""
    raw = secret.encode()
    assert auth.split_secret(raw) == ("", raw)


def test_a_key_depends_on_the_secret_the_name_and_the_salt() -> None:
    key = auth.credential_key(b"s", "etl", bytes(16))
    assert len(key) == 32
    assert key != auth.credential_key(b"t", "etl", bytes(16))
    assert key != auth.credential_key(b"s", "etm", bytes(16))
    assert key != auth.credential_key(b"s", "etl", bytes(15) + b"\x01")
