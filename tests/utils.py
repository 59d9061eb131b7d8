"""Test helpers: bounded waiting (never a fixed sleep), free ports, and the shared test secret."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

SECRET = "test-secret-7f3a"
TIMEOUT = 10.0
"""The longest any single wait in a test may take before it fails."""


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = TIMEOUT,
    what: str = "condition",
) -> None:
    """Re-check ``predicate`` every few milliseconds until true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_job_id(value: str) -> bool:
    """The id shape of proto/PROTOCOL.md: 32 lowercase hex digits."""
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)
