"""Settings shared by every command: where the manager secret comes from.

Kept apart from the manager so that a client command reads its secret without importing the
manager (its web framework and store).
"""

from __future__ import annotations

import os

from .errors import ConfigurationError


def read_secret(secret: str | bytes | None = None, secret_file: str | None = None) -> bytes:
    """The manager secret from an argument, a file, or the environment — never from argv."""
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
    raise ConfigurationError("no secret: set EASYJOBS_SECRET or pass --secret-file")
