"""HMAC-SHA256 challenge/response: each side proves it knows the secret without sending it.

The server sends a random nonce; the peer answers with its own nonce and
``HMAC(secret, "easyjobs/1 hello" + server_nonce + peer_nonce)``; the server answers with
``HMAC(secret, "easyjobs/1 welcome" + server_nonce + peer_nonce)``, so a peer also knows it
reached a manager holding the secret. Fresh nonces on both sides make every proof single-use.
"""

from __future__ import annotations

import hashlib
import hmac
import os

NONCE_SIZE = 32
_HELLO = b"easyjobs/1 hello"
_WELCOME = b"easyjobs/1 welcome"


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
