"""The standalone manager as an ASGI app: ``uvicorn --factory easyjobs.manager.app:create_app``.

Configuration comes from arguments or the environment: ``EASYJOBS_SECRET`` or
``EASYJOBS_SECRET_FILE`` (required), ``EASYJOBS_DB`` or its alias ``DB_PATH`` (an SQLite file
or a ``postgresql://`` URL; default ``easyjobs.db``) and
``EASYJOBS_HEARTBEAT`` and ``EASYJOBS_RETRY_BASE`` (seconds), ``EASYJOBS_MAX_WORKER_LOSSES``,
``EASYJOBS_API_TOKEN_FILE`` (extra bearer tokens for the HTTP API, one per line),
``EASYJOBS_METRICS_PUBLIC``, and the connection limits of ``connection_limits``.

uvicorn accepts raw connections before the app sees them; serve the app with
``http=guarded_http(**http_guard_options(limits))`` and ``ws=guarded_websockets(CLOSE_GRACE)``
(as ``easyjobs manager`` does) so that a connection that never sends its request, or a socket
that never drains, is closed too. TLS is uvicorn's too: pass its ``ssl_certfile``,
``ssl_keyfile``, ``ssl_ca_certs`` and ``ssl_cert_reqs``, or ``**easyjobs.tls.server_options(...)``,
which checks the files first (as ``easyjobs manager --ssl-certfile ...`` does).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..config import read_secret
from ..errors import ConfigurationError
from . import EasyJobsManager
from .endpoint import HANDSHAKE_TIMEOUT, MAX_BACKLOG, MAX_CONNECTIONS, MAX_UNAUTHENTICATED

_LIMITS: dict[str, tuple[str, type[float] | type[int], float]] = {
    "handshake_timeout": ("EASYJOBS_HANDSHAKE_TIMEOUT", float, HANDSHAKE_TIMEOUT),
    "max_backlog": ("EASYJOBS_MAX_BACKLOG", int, MAX_BACKLOG),
    "max_connections": ("EASYJOBS_MAX_CONNECTIONS", int, MAX_CONNECTIONS),
    "max_unauthenticated": ("EASYJOBS_MAX_UNAUTHENTICATED", int, MAX_UNAUTHENTICATED),
}


def connection_limits(**given: float | int | None) -> dict[str, Any]:
    """``handshake_timeout``, ``max_backlog``, ``max_connections`` and ``max_unauthenticated``:
    each from its argument, else its environment variable (``EASYJOBS_HANDSHAKE_TIMEOUT``, ...),
    else the manager's default."""
    limits: dict[str, Any] = {}
    for name, (env, kind, default) in _LIMITS.items():
        value = given.get(name)
        if value is None:
            raw = os.environ.get(env)
            try:
                value = kind(raw) if raw else default
            except ValueError:
                raise ConfigurationError(f"{env} must be a number, not {raw!r}") from None
        limits[name] = kind(value)
    return limits


def http_guard_options(limits: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``guarded_http`` for a manager with these ``connection_limits``."""
    return {"request_timeout": limits["handshake_timeout"],
            "max_connections": limits["max_connections"],
            "max_waiting": limits["max_unauthenticated"]}


def read_tokens(path: str | None) -> list[str]:
    """API tokens, one per line (blank lines and ``#`` comments ignored)."""
    if not path:
        return []
    try:
        with open(path) as fh:
            lines = [line.strip() for line in fh]
    except OSError as exc:
        raise ConfigurationError(f"cannot read the API token file: {exc.strerror}") from None
    return [line for line in lines if line and not line.startswith("#")]


def create_app(
    secret: str | bytes | None = None,
    db: str | None = None,
    *,
    secret_file: str | None = None,
    heartbeat: float | None = None,
    retry_base: float | None = None,
    max_worker_losses: int | None = None,
    api_token_file: str | None = None,
    metrics_public: bool | None = None,
    handshake_timeout: float | None = None,
    max_backlog: int | None = None,
    max_connections: int | None = None,
    max_unauthenticated: int | None = None,
    advertise: str | None = None,
) -> Starlette:
    """A Starlette app running one manager (with its HTTP API) for its lifespan."""
    limits = connection_limits(
        handshake_timeout=handshake_timeout, max_backlog=max_backlog,
        max_connections=max_connections, max_unauthenticated=max_unauthenticated)
    key = read_secret(secret, secret_file)
    tokens = read_tokens(api_token_file or os.environ.get("EASYJOBS_API_TOKEN_FILE"))
    public = metrics_public if metrics_public is not None else (
        os.environ.get("EASYJOBS_METRICS_PUBLIC", "") in ("1", "true", "yes"))
    beat = heartbeat or float(os.environ.get("EASYJOBS_HEARTBEAT", "1.0"))
    base = retry_base or float(os.environ.get("EASYJOBS_RETRY_BASE", "1.0"))
    losses = max_worker_losses or int(os.environ.get("EASYJOBS_MAX_WORKER_LOSSES", "3"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        manager = await EasyJobsManager.create(
            app, server_secret=key, db_path=db, heartbeat=beat, retry_base=base,
            max_worker_losses=losses,
            http_api=True, api_tokens=tokens, metrics_public=public, advertise=advertise,
            **limits)
        app.state.manager = manager
        try:
            yield
        finally:
            await manager.close()

    return Starlette(lifespan=lifespan, exception_handlers={
        404: _json_error, 405: _json_error})


async def _json_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer JSON too, like every route of the API."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return JSONResponse({"error": {"type": "not_found" if status == 404 else "bad_method",
                                   "message": detail}}, status_code=status)
