"""Schemathesis against a live manager's own /openapi.json: no 5xx and no slow answer for data
that fits the document or deliberately does not, while a worker stays connected and working.

Schemathesis's pytest integration runs synchronous tests, which would block the event loop the
manager and the worker live on; so its Python API is used instead: the document is loaded with
``schemathesis.openapi.from_dict``, each operation's Hypothesis strategy (positive and negative)
drives a ``@given`` function that runs in a thread, while the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error

from easyjobs import EasyJobsWorker

from ..conftest import RunningManager
from ..mesh import registered
from ..utils import SECRET, TIMEOUT
from .conftest import base_url

EXAMPLES = 30
"""Hypothesis examples per operation and generation mode."""
SLOWEST = 2.0
"""Seconds any single answer may take (waits are capped at 1 s, see ``bounded``)."""


def bounded(case: schemathesis.Case) -> None:
    """Cap ``?wait`` and ``?timeout``: a generated 300 s wait on a job that cannot run (the
    fuzzer may pause every worker) is a correct answer, just a slow one."""
    for name in ("wait", "timeout"):
        value = (case.query or {}).get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1:
            case.query[name] = 1  # type: ignore[index]


def fuzz(doc: dict[str, Any], url: str) -> dict[str, int]:
    """Run every operation's strategies; returns how many requests each status got."""
    schema = schemathesis.openapi.from_dict(doc)
    headers = {"Authorization": f"Bearer {SECRET}"}
    statuses: dict[str, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def run(case: schemathesis.Case) -> None:
                bounded(case)
                t0 = time.monotonic()
                response = case.call(base_url=url, headers=headers, timeout=TIMEOUT)
                elapsed = time.monotonic() - t0
                key = f"{response.status_code // 100}xx"
                statuses[key] = statuses.get(key, 0) + 1
                case.validate_response(response, checks=[not_a_server_error], headers=headers)
                assert elapsed < SLOWEST, f"{case.operation.label} took {elapsed:.2f}s"

            try:
                run()
            except Unsatisfiable:  # nothing in this operation can be made invalid
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    return statuses


@pytest.mark.timeout(180)  # hundreds of generated requests; slow on a loaded 2-core machine
async def test_fuzz_the_generated_document(
    manager: RunningManager, worker_factory: Callable[..., EasyJobsWorker],
    api: httpx.AsyncClient,
) -> None:
    """Generated requests to every operation get no 5xx, each answers within 2 s, and the
    worker connected meanwhile still serves calls afterwards."""
    worker = worker_factory(name="w-fuzz")

    @worker.task()
    async def add(a: int, b: int = 2) -> int:
        return a + b

    @worker.task()
    async def shapes(s: str, flag: bool, items: list[int], table: dict[str, float],
                     maybe: int | None = None, blob: bytes = b"") -> list[Any]:
        return [s, flag, items, table, maybe, blob]

    @worker.task()
    async def anything(x, *rest, **extra):  # type: ignore[no-untyped-def]
        return [x, rest, extra]

    await worker.start()
    await registered(manager, "ETL", "add", "shapes", "anything")
    peers_before = set(manager.manager.core.dispatcher.workers)
    doc = (await api.get("/openapi.json")).json()
    statuses = await asyncio.to_thread(fuzz, doc, base_url(manager))
    assert "5xx" not in statuses and statuses.get("2xx", 0) > 0 and statuses.get("4xx", 0) > 0

    assert set(manager.manager.core.dispatcher.workers) == peers_before  # nobody reconnected
    await api.post("/workers/resume")  # the fuzzer may have paused everyone
    assert await add(40) == 42
    response = await api.post("/ETL/task/add", params={"wait": TIMEOUT}, json={"a": 1})
    assert response.status_code == 200 and response.json()["result"] == 3
