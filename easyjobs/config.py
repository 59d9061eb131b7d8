"""Settings shared by every command, read from arguments or the environment: the manager
secret, the managers to connect to, the CA file for TLS.

Kept apart from the manager so that a client command reads its secret without importing the
manager (its web framework and store).
"""

from __future__ import annotations

import os

from .errors import ConfigurationError


def read_secret(secret: str | bytes | None = None, secret_file: str | None = None, *,
                option: str = "--secret-file") -> bytes:
    """The manager secret from an argument, a file, or the environment — never from argv.

    In that order: ``secret``, ``secret_file``, ``EASYJOBS_SECRET_FILE``, ``EASYJOBS_SECRET``.
    ``option`` names, in the error, what the caller could have passed instead.
    """
    if secret:
        return secret.encode() if isinstance(secret, str) else secret
    path = secret_file or os.environ.get("EASYJOBS_SECRET_FILE")
    if path:
        try:
            with open(path, "rb") as fh:
                value = fh.read().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the secret file: {exc.strerror}") from None
        if value:
            return value
        raise ConfigurationError("the secret file is empty")
    env = os.environ.get("EASYJOBS_SECRET")
    if env:
        return env.encode()
    raise ConfigurationError(
        f"no secret: set EASYJOBS_SECRET or pass {option} (or name a file in "
        "EASYJOBS_SECRET_FILE)")


def read_managers() -> str | None:
    """``EASYJOBS_MANAGERS``: the managers to try, comma-separated (None when unset or blank)."""
    return os.environ.get("EASYJOBS_MANAGERS", "").strip() or None


def read_host_port() -> tuple[str | None, int | None]:
    """``EASYJOBS_HOST`` and ``EASYJOBS_PORT``, the older way to name one manager."""
    host = os.environ.get("EASYJOBS_HOST") or None
    raw = os.environ.get("EASYJOBS_PORT") or None
    if raw is None:
        return host, None
    try:
        return host, int(raw)
    except ValueError:
        raise ConfigurationError(f"EASYJOBS_PORT must be a port number, not {raw!r}") from None


def read_advertise() -> str | None:
    """``EASYJOBS_ADVERTISE``: where the other managers on a shared store reach this one."""
    return os.environ.get("EASYJOBS_ADVERTISE", "").strip() or None


def read_tls_ca() -> str | None:
    """``EASYJOBS_TLS_CA``: a PEM file of the CAs to trust for the managers' certificates."""
    return os.environ.get("EASYJOBS_TLS_CA", "").strip() or None
