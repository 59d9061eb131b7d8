"""A worker that traces, for ``tests/test_tracing.py`` (``procs.traced_worker:worker``).

It configures the OpenTelemetry SDK as an application would and exports every span, as it
ends, as one JSON line appended to the file ``SPANS_FILE``, so the test reads them while the
worker runs; without ``SPANS_FILE`` it configures nothing (the API alone, as
FastAPI brings). Where to connect comes from ``EASYJOBS_MANAGERS`` and ``EASYJOBS_SECRET``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from easyjobs import EasyJobsWorker
from easyjobs.workers.link import Backoff

QUEUE = "TRACED"


def describe(span: ReadableSpan) -> dict[str, Any]:
    """What the test checks of a span, as plain JSON (ids in hex, as W3C writes them)."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
        "attributes": dict(span.attributes or {}),
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
    }


class JsonLines(SpanExporter):
    """Appends each span as one line; a reader takes only the lines that end."""

    def __init__(self, path: str) -> None:
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self._path, "a", encoding="utf-8") as out:
            out.write("".join(json.dumps(describe(span)) + "\n" for span in spans))
        return SpanExportResult.SUCCESS


if "SPANS_FILE" in os.environ:  # else the API alone: no provider, no span
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLines(os.environ["SPANS_FILE"])))
    trace.set_tracer_provider(provider)

worker = EasyJobsWorker(jobs_queue=QUEUE, name=os.environ["WORKER_NAME"],
                        backoff=Backoff(initial=0.02, maximum=0.2))


@worker.task()
async def ping() -> str:
    return "pong"


@worker.task()
async def inner(x: int) -> int:
    return x * 2


@worker.task()
async def outer(x: int) -> int:
    """A task that awaits another task: its submit is a child of this attempt."""
    return await inner(x) + 1


@worker.task()
async def second(value: int) -> int:
    return value + 1


@worker.task(run_after=["second"])
async def first() -> dict[str, int]:
    return {"value": 1}


@worker.task()
async def prep() -> None:
    return None


@worker.task(run_before=["prep"])
async def gated() -> str:
    return "after prep"


@worker.task(retry_policy="never")
async def broken() -> None:
    raise ValueError("broken on purpose")
