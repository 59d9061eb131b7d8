"""Helpers for tests with real processes (``process_factory``, ``run_cli``) and raw WebSockets."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection

from easyjobs.protocol.auth import new_nonce
from easyjobs.protocol.session import ClientSession, State

from .conftest import Process, RunningManager
from .utils import SECRET, TIMEOUT, wait_until

TESTS = Path(__file__).resolve().parent
WORKER_APP = "procs.worker_app:worker"
QUEUE = "PROCS"
"""The queue of ``procs/worker_app.py`` (not imported here: it reads its settings at import)."""


def spawn_worker(spawn: Callable[..., Process], port: int, name: str, *extra: str,
                 slots: int = 4, env: dict[str, str] | None = None) -> Process:
    """``python -m easyjobs worker procs.worker_app:worker`` pointed at 127.0.0.1:``port``."""
    return spawn("-m", "easyjobs", "--log-level", "DEBUG", "worker", WORKER_APP, *extra,
                 env={"EASYJOBS_PORT": str(port), "WORKER_NAME": name,
                      "WORKER_SLOTS": str(slots), **(env or {})})


def spawn_manager(spawn: Callable[..., Process], port: int, db: Path, *extra: str,
                  env: dict[str, str] | None = None) -> Process:
    """``python -m easyjobs manager`` on 127.0.0.1:``port`` with its SQLite file at ``db``."""
    return spawn("-m", "easyjobs", "--log-level", "DEBUG", "manager", "--host", "127.0.0.1",
                 "--port", str(port), "--db", str(db), *extra, env=env)


async def wait_listening(proc: Process, port: int) -> None:
    """Wait until ``port`` accepts connections (uvicorn binds after the manager started)."""

    async def listening() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"the manager exited early:\n{proc.output()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    await wait_until(listening, what=f"a manager listening on port {port}")


def serving(running: RunningManager, task: str, worker: str) -> bool:
    """True once the worker named ``worker`` is connected and has advertised ``task``."""
    return any(
        state.name == worker and any(name == task for _, name in state.keys)
        for state in running.manager.core.dispatcher.workers.values()
    )


def assert_secret_hidden(proc: Process, secret: str = SECRET) -> None:
    """The secret is in neither the process's argv (as the OS shows it) nor its output."""
    if proc.popen.poll() is None:
        argv = Path(f"/proc/{proc.popen.pid}/cmdline").read_bytes().split(b"\0")
        assert argv[0], "read /proc while the process runs"
        assert not any(secret.encode() in arg for arg in argv), argv
    assert secret not in " ".join(str(a) for a in proc.popen.args)  # type: ignore[union-attr]
    assert secret not in proc.output()


async def finished(proc: Process, timeout: float = 10.0) -> int:
    """Wait (bounded) for the process to exit; its return code."""
    await wait_until(lambda: proc.popen.poll() is not None, timeout,
                     what=f"process {proc.popen.pid} to exit")
    code: Any = proc.popen.returncode
    return int(code)


@dataclass
class Ran:
    """A finished ``python -m easyjobs ...`` run."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str


async def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                  timeout: float = TIMEOUT) -> Ran:
    """Run ``python -m easyjobs ARGS`` to completion without blocking the event loop.

    The environment is the test process's, plus ``EASYJOBS_SECRET`` and a ``PYTHONPATH`` with the
    repository and ``tests/`` (as ``process_factory`` gives its children), plus ``env``.
    """
    full_env = {**os.environ, "EASYJOBS_SECRET": SECRET, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS.parent), str(TESTS), full_env.get("PYTHONPATH", "")])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "easyjobs", *args, env=full_env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Ran(args, proc.returncode, out.decode(), err.decode())


async def handshake(ws: ClientConnection, role: str, secret: str = SECRET) -> ClientSession:
    """Complete the handshake as ``role``; the session then encodes and checks our frames."""
    session = ClientSession(secret.encode(), 0.0, role=role, name=f"fuzz-{role}",
                            nonce=new_nonce())
    while session.state is not State.OPEN:
        data = await ws.recv()
        assert isinstance(data, bytes)
        session.receive(data, 0.0)
        assert session.state is not State.CLOSED, session.error
        for message in session.data_to_send():
            await ws.send(message)
    return session
