"""TLS settings of both ends: the context workers and clients verify managers with, one clear
line for each way TLS can fail, and the manager's uvicorn options (``server_options``).

The manager's certificate is verified by default, against the system's trust store or the CAs
in ``ca_file`` (else ``EASYJOBS_TLS_CA``), host name included. ``client_cert`` (and
``client_key``, unless the key is in the same file) is presented to a manager that asks for
one (mutual TLS). Every failure that retrying cannot mend becomes a ``TLSError`` naming the
manager, the reason and what to change.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .addresses import ManagerAddress
from .config import read_tls_ca
from .errors import ConfigurationError, TLSError

_UNTRUSTED = (18, 19, 20, 21)
"""OpenSSL's verify codes for a certificate whose issuer we do not trust."""
_EXPIRED = 10
_NOT_YET_VALID = 9
_NAME_MISMATCH = (62, 64)
"""Host name and IP address mismatch."""


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """How a link speaks TLS: the context, and whether it presents a certificate of its own."""

    context: ssl.SSLContext
    presents_certificate: bool


def client_tls(
    addresses: Sequence[ManagerAddress],
    *,
    ca_file: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ClientTLS | None:
    """The TLS settings for these managers; None when none of them is reached over TLS.

    Files are read now, so a missing or unreadable one fails at construction, naming itself.
    """
    if not any(address.tls for address in addresses):
        given = [name for name, value in (("ca_file", ca_file), ("client_cert", client_cert),
                                          ("client_key", client_key)) if value]
        if given:
            raise ConfigurationError(
                f"{', '.join(given)} given but no manager is reached over TLS: write "
                "wss://host:port in managers, or pass tls=True")
        return None
    if client_key and not client_cert:
        raise ConfigurationError("client_key given without client_cert: pass both (or "
                                 "client_cert alone, for a file holding the key too)")
    cafile = ca_file or read_tls_ca()
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load the CA file {cafile!r}: {_why(exc)}") from None
    if client_cert:
        try:
            # A passphrase is never prompted for: an encrypted key fails here instead.
            context.load_cert_chain(client_cert, client_key, password=_no_password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot load the client certificate {client_cert!r}"
                f"{f' and key {client_key!r}' if client_key else ''}: {_why(exc)} "
                "(a PEM certificate with its unencrypted key)") from None
    return ClientTLS(context, bool(client_cert))


def tls_failure(address: ManagerAddress, exc: ssl.SSLError) -> TLSError:
    """The error for a TLS handshake with ``address`` that failed with ``exc``."""
    where = f"TLS with the manager at {address} failed"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        reason = exc.verify_message or exc.reason or "certificate verify failed"
        if code in _UNTRUSTED:
            hint = ("pass ca_file= (or set EASYJOBS_TLS_CA) to the CA that signed the "
                    "manager's certificate")
        elif code == _EXPIRED:
            hint = "the manager needs a renewed certificate"
        elif code == _NOT_YET_VALID:
            hint = "check the clocks, or wait until the certificate is valid"
        elif code in _NAME_MISMATCH:
            hint = (f"connect by a name the certificate lists, or issue one for "
                    f"{address.host}")
        else:
            hint = "check the manager's certificate"
        return TLSError(f"{where}: {reason.rstrip('.')}; {hint}")
    if exc.reason == "WRONG_VERSION_NUMBER":
        return not_tls(address)
    return TLSError(f"{where}: {_why(exc)}")


def not_tls(address: ManagerAddress) -> TLSError:
    """A TLS client met a manager that answers in plain text."""
    return TLSError(
        f"the manager at {address} does not speak TLS: write ws://{address} (without tls), "
        "or serve the manager with --ssl-certfile/--ssl-keyfile")


def speaks_tls(address: ManagerAddress) -> TLSError:
    """A plain client met a manager that serves TLS."""
    return TLSError(
        f"the manager at {address} speaks TLS and we do not: write wss://{address} in "
        "managers (or pass tls=True)")


def refused_certificate(address: ManagerAddress, presented: bool) -> TLSError:
    """The manager completed the handshake, then closed without a word: mutual TLS refused."""
    if presented:
        why = ("it did not accept our client certificate; present one signed by a CA in the "
               "manager's --ssl-ca-certs")
    else:
        why = "it requires a client certificate; pass client_cert= (and client_key=)"
    return TLSError(f"the manager at {address} closed the TLS connection unanswered: {why}")


def server_options(
    certfile: str | None,
    keyfile: str | None = None,
    ca_certs: str | None = None,
    require_client_cert: bool = False,
) -> dict[str, Any]:
    """uvicorn's TLS options for a manager (``uvicorn.run(app, **server_options(...))``).

    ``ca_certs``: the CAs whose client certificates are accepted; with ``require_client_cert``
    a peer without one is refused (mutual TLS), without it a certificate is checked only if
    presented. The files are loaded once here, so a bad one fails before uvicorn starts.
    """
    if not certfile:
        given = [flag for flag, value in (("--ssl-keyfile", keyfile), ("--ssl-ca-certs", ca_certs),
                                          ("--require-client-cert", require_client_cert))
                 if value]
        if given:
            raise ConfigurationError(
                f"{', '.join(given)} without --ssl-certfile: TLS needs the manager's "
                "certificate (--ssl-certfile F --ssl-keyfile F)")
        return {}
    if require_client_cert and not ca_certs:
        raise ConfigurationError(
            "--require-client-cert needs --ssl-ca-certs F: the CAs whose client certificates "
            "the manager accepts")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_password)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load the manager's certificate {certfile!r}"
            f"{f' and key {keyfile!r}' if keyfile else ''}: {_why(exc)} (a PEM certificate "
            "with its unencrypted key)") from None
    if ca_certs:
        try:
            context.load_verify_locations(ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load the CA file {ca_certs!r}: {_why(exc)}") \
                from None
    required = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return {"ssl_certfile": certfile, "ssl_keyfile": keyfile, "ssl_ca_certs": ca_certs,
            "ssl_cert_reqs": required if ca_certs else ssl.CERT_NONE}


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _no_password() -> bytes:
    return b""
