"""The standalone manager as an ASGI app: ``uvicorn --factory easyjobs.manager.app:create_app``.

Configuration comes from arguments or the environment: ``EASYJOBS_SECRET`` or
``EASYJOBS_SECRET_FILE`` (required), ``DB_PATH`` (default ``easyjobs.db``) and
``EASYJOBS_HEARTBEAT`` and ``EASYJOBS_RETRY_BASE`` (seconds).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from ..errors import ConfigurationError
from . import EasyJobsManager


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


def create_app(
    secret: str | bytes | None = None,
    db: str | None = None,
    *,
    secret_file: str | None = None,
    heartbeat: float | None = None,
    retry_base: float | None = None,
) -> Starlette:
    """A Starlette app running one manager for its lifespan."""
    key = read_secret(secret, secret_file)
    beat = heartbeat or float(os.environ.get("EASYJOBS_HEARTBEAT", "1.0"))
    base = retry_base or float(os.environ.get("EASYJOBS_RETRY_BASE", "1.0"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        manager = await EasyJobsManager.create(app, server_secret=key, db_path=db, heartbeat=beat,
                                               retry_base=base)
        app.state.manager = manager
        try:
            yield
        finally:
            await manager.close()

    return Starlette(lifespan=lifespan)
