"""HMAC-SHA256 challenge/response: each side proves it knows the secret without sending it.

The server sends a random nonce; the peer answers with its own nonce and
``HMAC(secret, "easyjobs/1 hello" + server_nonce + peer_nonce)``; the server answers with
``HMAC(secret, "easyjobs/1 welcome" + server_nonce + peer_nonce)``, so a peer also knows it
reached a manager holding the secret. Fresh nonces on both sides make every proof single-use.

A named credential's key is derived from the manager secret and a random salt the store keeps
(``credential_key``): the store alone authenticates nobody. Its holder gets a token
``ej1.<name>.<key, base64url>``; ``split_secret`` tells a token from a manager secret, and the
name goes in ``hello`` so the manager knows which key to check the proof with.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re

NONCE_SIZE = 32
_HELLO = b"easyjobs/1 hello"
_WELCOME = b"easyjobs/1 welcome"
_CREDENTIAL = b"easyjobs/1 credential"
TOKEN_PREFIX = "ej1."
CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a credential's name may be: it goes in tokens, logs and URLs as it is."""
_KEY_TEXT = re.compile(rb"[A-Za-z0-9_-]+")
"""A token's key part: unpadded base64url (the decoder would skip other bytes, not fail)."""
SALT_SIZE = 16


def new_nonce() -> bytes:
    """A fresh random nonce from the OS's CSPRNG."""
    return os.urandom(NONCE_SIZE)


def hello_proof(secret: bytes, server_nonce: bytes, peer_nonce: bytes) -> bytes:
    """What a peer sends to prove it knows ``secret``."""
    return hmac.new(secret, _HELLO + server_nonce + peer_nonce, hashlib.sha256).digest()


def welcome_proof(secret: bytes, server_nonce: bytes, peer_nonce: bytes) -> bytes:
    """What the server sends back to prove it knows ``secret`` too."""
    return hmac.new(secret, _WELCOME + server_nonce + peer_nonce, hashlib.sha256).digest()


def proof_matches(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison, so timing reveals nothing about the expected proof."""
    return hmac.compare_digest(expected, received)


def credential_key(secret: bytes, name: str, salt: bytes) -> bytes:
    """The key of credential ``name``: only a holder of the manager secret can derive it."""
    return hmac.new(secret, _CREDENTIAL + name.encode() + b"\0" + salt, hashlib.sha256).digest()


def credential_token(name: str, key: bytes) -> str:
    """What the holder of a credential configures as its secret."""
    return TOKEN_PREFIX + name + "." + base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def split_secret(secret: bytes) -> tuple[str, bytes]:
    """``(credential name, key)`` of a token; ``("", secret)`` for the manager secret itself."""
    prefix, _, rest = secret.partition(b".")
    name, _, encoded = rest.rpartition(b".")
    if prefix + b"." != TOKEN_PREFIX.encode() or not CREDENTIAL_NAME.fullmatch(name.decode(
            "ascii", "replace")) or not _KEY_TEXT.fullmatch(encoded):
        return "", secret
    try:
        key = base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return "", secret
    return name.decode(), key
