"""A standalone manager served the way ``easyjobs manager`` serves it: uvicorn with the guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from easyjobs.manager.app import connection_limits, create_app, http_guard_options
from easyjobs.manager.guard import guarded_http, guarded_websockets
from easyjobs.protocol.session import CLOSE_GRACE

from ..conftest import RunningManager
from ..utils import SECRET, wait_until


async def start_guarded(db: Path, heartbeat: float = 1.0, **limits: Any) -> RunningManager:
    """``create_app`` behind ``guarded_http`` on 127.0.0.1; ``limits`` as ``connection_limits``."""
    chosen = connection_limits(**limits)
    app = create_app(SECRET, str(db), heartbeat=heartbeat, **chosen)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                            http=guarded_http(**http_guard_options(chosen)),
                            ws=guarded_websockets(CLOSE_GRACE))
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    await wait_until(lambda: server.started or task.done(), what="uvicorn to start")
    if task.done():
        task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningManager("127.0.0.1", port, db, server, task)


@pytest.fixture
async def guarded_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start guarded managers on demand; all are stopped afterwards."""
    started: list[RunningManager] = []

    async def make(**options: Any) -> RunningManager:
        running = await start_guarded(tmp_path / "jobs.db", **options)
        started.append(running)
        return running

    yield make
    for running in started:
        if not running.task.done():
            await running.stop()
