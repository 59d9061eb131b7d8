"""Open the WebSocket to one manager, telling failures retrying can mend from those it cannot.

A refused, reset or timed-out connection is worth retrying (the link moves on to the next
manager). A TLS failure is not, and must not look like an outage: it becomes a ``TLSError``.
Two such failures show up only as a connection closed before any HTTP answer — a plain client
at a TLS port, and a manager refusing our client certificate (TLS 1.3 gives that verdict after
the handshake, and uvicorn closes without an alert) — so for that symptom alone a second,
blocking connection asks the port what it is before the link decides.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidMessage

from ..addresses import ManagerAddress
from ..errors import TLSError
from ..protocol.session import MAX_MESSAGE_LIMIT
from ..tls import ClientTLS, refused_certificate, speaks_tls, tls_failure

WS_PATH = "/ws/jobs"
OPEN_TIMEOUT = 10.0
"""Seconds to connect, finish TLS and get the HTTP upgrade answered."""

MAX_RECEIVE = MAX_MESSAGE_LIMIT
"""Largest WebSocket message read before the session's own (smaller) limit applies."""

_TRANSIENT_TLS = (ssl.SSLEOFError, ssl.SSLZeroReturnError)
"""The peer went away mid-handshake: an outage, not a misconfiguration."""


async def dial(address: ManagerAddress, tls: ClientTLS | None) -> ClientConnection:
    """The open WebSocket to ``address``; ``TLSError`` for what retrying cannot mend.

    Anything else raised (``OSError``, ``TimeoutError``, websockets' handshake errors) is an
    outage to retry.
    """
    uri = f"{address.scheme}://{address.netloc}{WS_PATH}"
    options: dict[str, Any] = {"ssl": tls.context} if address.tls and tls is not None else {}
    try:
        return await connect(uri, max_size=MAX_RECEIVE, compression=None, ping_interval=None,
                             open_timeout=OPEN_TIMEOUT, close_timeout=2, **options)
    except _TRANSIENT_TLS:
        raise
    except ssl.SSLError as exc:
        raise tls_failure(address, exc) from None
    except InvalidMessage as exc:
        if isinstance(exc.__cause__, EOFError):  # closed before a byte of an answer
            error = await asyncio.to_thread(_diagnose, address, tls)
            if error is not None:
                raise error from None
        raise


def _diagnose(address: ManagerAddress, tls: ClientTLS | None) -> TLSError | None:
    """Why ``address`` closed an upgrade request unanswered, if TLS explains it (blocking)."""
    if address.tls and tls is not None:
        try:
            with socket.create_connection((address.host, address.port), OPEN_TIMEOUT) as raw, \
                    tls.context.wrap_socket(raw, server_hostname=address.host) as conn:
                conn.sendall(_request(address))
                answered = conn.recv(1) != b""
        except OSError:  # not what we saw the first time: an outage after all
            return None
        return None if answered else refused_certificate(address, tls.presents_certificate)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # only asking whether it speaks TLS at all
    try:
        with socket.create_connection((address.host, address.port), OPEN_TIMEOUT) as raw, \
                probe.wrap_socket(raw, server_hostname=address.host):
            return speaks_tls(address)
    except OSError:
        return None


def _request(address: ManagerAddress) -> bytes:
    return (f"GET {WS_PATH} HTTP/1.1\r\nHost: {address.netloc}\r\n"
            "Connection: close\r\n\r\n").encode()
