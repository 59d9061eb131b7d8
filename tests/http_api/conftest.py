"""Fixtures for the HTTP API: the manager the worker fixtures point at also reads an API token
file; ``api`` is an httpx client holding the manager secret as its bearer token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import RunningManager
from ..utils import SECRET, TIMEOUT

API_TOKEN = "api-token-5c1e"
"""The second line of the token file every manager here reads (the first is a comment)."""


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-tokens"
    path.write_text(f"# one token per line\n\n{API_TOKEN}\n")
    return path


@pytest.fixture
def http_manager_factory(
    tmp_path: Path, token_file: Path, manager_factory: Callable[..., Any]
) -> Callable[..., Any]:
    """Start managers that also read ``token_file`` and retry failed attempts after a few
    milliseconds (``await http_manager_factory(metrics_public=True)``); each has its own
    database. The suite's ``manager_factory`` stops them."""
    count = 0

    async def make(metrics_public: bool = False) -> RunningManager:
        nonlocal count
        count += 1
        return await manager_factory(  # type: ignore[no-any-return]
            db=tmp_path / f"jobs{count}.db", retry_base=0.01, api_token_file=token_file,
            metrics_public=metrics_public)

    return make


@pytest.fixture
async def manager(http_manager_factory: Callable[..., Any]) -> RunningManager:
    """Overrides the suite's ``manager``: the workers and clients made here connect to it."""
    return await http_manager_factory()  # type: ignore[no-any-return]


def base_url(running: RunningManager) -> str:
    return f"http://{running.host}:{running.port}"


@pytest.fixture
async def api(manager: RunningManager) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``manager``, authenticated with the manager secret."""
    async with httpx.AsyncClient(base_url=base_url(manager), timeout=TIMEOUT,
                                 headers={"Authorization": f"Bearer {SECRET}"}) as client:
        yield client


@pytest.fixture
async def anonymous(manager: RunningManager) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for ``manager`` with no credentials."""
    async with httpx.AsyncClient(base_url=base_url(manager), timeout=TIMEOUT) as client:
        yield client
