"""Nobody answers: the client and every CLI client command fail within their timeout, naming the
address they tried and pointing at ``easyjobs manager``; the CLI reads its secret without
importing the manager."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from easyjobs import ConfigurationError, ConnectionLost, EasyJobsClient

from .conftest import RunningManager
from .processes import run_cli
from .utils import SECRET, TIMEOUT, free_port, wait_until

SLACK = 1.0
"""How late (seconds) a timeout may fire on a busy 2-core machine."""

STARTUP = 4.0
"""Seconds a ``python -m easyjobs`` process may take to start on a busy machine."""


async def test_connect_to_a_closed_port_raises_naming_the_address() -> None:
    """connect() raises ConnectionLost after connect_timeout, with the address it tried."""
    port = free_port()
    client = EasyJobsClient("127.0.0.1", port, SECRET, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ConnectionLost, match=f"127.0.0.1:{port}.*easyjobs manager"):
        await asyncio.wait_for(client.connect(), TIMEOUT)
    assert time.monotonic() - started <= 0.5 + SLACK
    with pytest.raises(ConnectionLost):  # the link is closed: nothing waits on it for ever
        await client.job("0" * 32)


async def test_requests_fail_after_their_timeout_while_the_link_is_down(
    manager: RunningManager,
) -> None:
    """A request made while the manager is gone fails with ConnectionLost after its timeout."""
    client = EasyJobsClient(manager.host, manager.port, SECRET, request_timeout=0.5)
    await client.connect()
    try:
        await manager.stop()
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match=f"{manager.host}:{manager.port}"):
            await asyncio.wait_for(client.jobs(), TIMEOUT)
        assert time.monotonic() - started <= 0.5 + SLACK
    finally:
        await client.close()


async def test_requests_wait_for_the_manager_to_come_back(
    manager_factory: Callable[..., Any], manager: RunningManager,
) -> None:
    """A request made while the link is down is answered if the manager returns in time."""
    client = EasyJobsClient(manager.host, manager.port, SECRET, request_timeout=TIMEOUT,
                            backoff=lambda attempt: 0.05)
    await client.connect()
    try:
        await manager.stop()
        await wait_until(lambda: not client._link.is_open, what="the client to see it")
        pending = asyncio.ensure_future(client.jobs())
        await manager_factory(port=manager.port)
        records, _ = await asyncio.wait_for(pending, TIMEOUT)
        assert records == []
    finally:
        await client.close()


def test_a_bad_address_fails_at_once() -> None:
    """A host or port that can never be connected to is a ConfigurationError, not a retry."""
    with pytest.raises(ConfigurationError, match="port 70000"):
        EasyJobsClient("127.0.0.1", 70000, SECRET)
    with pytest.raises(ConfigurationError, match="host ''"):
        EasyJobsClient("", 8220, SECRET)


@pytest.mark.parametrize("command", [
    ["call", "Q", "t"], ["jobs"], ["job", "0" * 32], ["cancel", "0" * 32], ["schedules"],
])
async def test_cli_client_commands_exit_within_their_timeout(command: list[str]) -> None:
    """Every client command against a closed port exits 1 within --timeout, naming it."""
    port = free_port()
    started = time.monotonic()
    ran = await run_cli(*command, "--port", str(port), "--timeout", "1")
    assert ran.code == 1, ran
    assert time.monotonic() - started <= 1 + STARTUP
    assert f"127.0.0.1:{port}" in ran.err and "easyjobs manager" in ran.err, ran.err
    assert "Traceback" not in ran.err


async def test_cli_client_commands_do_not_import_the_manager() -> None:
    """A client command reads its secret without loading easyjobs.manager (D15)."""
    port = free_port()
    script = ("import sys; from easyjobs.cli import main; "
              f"code = main(['jobs', '--port', '{port}', '--timeout', '0.2']); "
              "print(sorted(m for m in sys.modules if m.startswith('easyjobs.manager')), code)")
    ran = await run_python(script)
    assert ran.strip().splitlines()[-1] == "[] 1", ran


async def run_python(script: str) -> str:
    """Run ``python -c script`` with the test secret; its stdout."""
    env = {"EASYJOBS_SECRET": SECRET, "PYTHONPATH": ":".join(sys.path)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    return out.decode()
