"""OpenTelemetry traces across real processes: a caller here, managers and a tracing worker
(``procs/traced_worker.py``) as child processes.

The caller's spans go to the SDK's in-memory exporter; the worker appends its spans to a JSON
lines file as they end. A job's spans, and those of the jobs it leads to, share one trace.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from easyjobs import EasyJobsClient, TaskFailed, UnknownTask, tracing

from .conftest import FAST_BACKOFF, Process
from .processes import spawn_manager, wait_listening
from .utils import SECRET, TIMEOUT, free_port, wait_until

QUEUE = "TRACED"
WORKER = "traced-worker"
Span = dict[str, Any]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """The caller's spans, kept in memory (this process's easyjobs traces to it alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)
    provider.shutdown()


class Traced:
    """Managers, the tracing worker and a client, as one test's deployment."""

    def __init__(self, client: EasyJobsClient, spans: Path, port: int) -> None:
        self.client = client
        self.spans = spans
        self.port = port
        """The client's manager."""

    def worker_spans(self, trace_id: str) -> list[Span]:
        """The spans of ``trace_id`` the worker has exported so far (whole lines only)."""
        if not self.spans.exists():
            return []
        lines = self.spans.read_text(encoding="utf-8").splitlines(keepends=True)
        spans = [json.loads(line) for line in lines if line.endswith("\n")]
        return [span for span in spans if span["trace_id"] == trace_id]

    async def wait_for(self, trace_id: str, *names: str) -> dict[str, Span]:
        """The worker's spans of ``trace_id`` by name, once every one of ``names`` is there."""
        await wait_until(
            lambda: set(names) <= {s["name"] for s in self.worker_spans(trace_id)},
            what=f"the worker's spans {names}")
        spans = {span["name"]: span for span in self.worker_spans(trace_id)}
        assert len(spans) == len(self.worker_spans(trace_id)), "one span per name"
        return spans


@pytest.fixture
async def traced(request: pytest.FixtureRequest, process_factory: Callable[..., Process],
                 tmp_path: Path) -> AsyncIterator[Traced]:
    """The worker and the client on one SQLite manager, or on two managers sharing
    PostgreSQL: the client on the first, the worker on the second; a ``quiet-worker`` has
    the OpenTelemetry API but no SDK."""
    ports = [free_port()]
    if request.param != "two-managers-postgres":
        managers = [spawn_manager(process_factory, ports[0], tmp_path / "jobs.db")]
    else:
        url = request.getfixturevalue("pg_url")
        ports.append(free_port())
        managers = [process_factory("-m", "easyjobs", "manager", "--host", "127.0.0.1",
                                    "--port", str(port), env={"EASYJOBS_DB": url})
                    for port in ports]
    for proc, port in zip(managers, ports, strict=True):
        await wait_listening(proc, port)
    spans = tmp_path / "worker-spans.jsonl"
    env = {"EASYJOBS_MANAGERS": f"127.0.0.1:{ports[-1]}", "WORKER_NAME": WORKER}
    if request.param != "quiet-worker":
        env["SPANS_FILE"] = str(spans)
    process_factory("-m", "easyjobs", "worker", "procs.traced_worker:worker", env=env)
    async with EasyJobsClient(managers=[f"127.0.0.1:{ports[0]}"], secret=SECRET,
                              backoff=FAST_BACKOFF) as client:

        async def registered() -> bool:
            try:
                return await client.call(QUEUE, "ping") == "pong"  # type: ignore[no-any-return]
            except UnknownTask:
                return False

        await wait_until(registered, what="the worker to serve its tasks")
        yield Traced(client, spans, ports[0])


def only(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    [span] = [s for s in spans if s.name == name]
    return span


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    """The span's trace id and span id as the worker's file writes them."""
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def assert_attempt(span: Span, parent: str, task: str, job: str, outcome: str) -> None:
    """``span`` is the first attempt of ``job`` on the worker, a child of span ``parent``."""
    assert span["kind"] == "CONSUMER"
    assert span["parent_id"] == parent
    assert span["attributes"] == {
        "easyjobs.queue": QUEUE, "easyjobs.task": task, "easyjobs.job_id": job,
        "easyjobs.attempt": 1, "easyjobs.worker": WORKER, "easyjobs.outcome": outcome}


@pytest.mark.parametrize("traced", ["one-manager", "two-managers-postgres"], indirect=True)
async def test_a_call_to_a_task_that_awaits_another_task_is_one_trace(
        traced: Traced, exporter: InMemorySpanExporter) -> None:
    """Caller submit -> (queue wait, attempt) -> inner submit -> (queue wait, attempt): one
    trace, each span the child of the one before, across the managers too."""
    assert await traced.client.call(QUEUE, "outer", 5) == 11
    submit = only(exporter.get_finished_spans(), f"easyjobs.submit {QUEUE}.outer")
    trace_id, submit_id = hex_ids(submit)
    assert submit.parent is None and submit.kind.name == "PRODUCER"
    job = (submit.attributes or {})["easyjobs.job_id"]
    assert isinstance(job, str)
    assert submit.attributes == {"easyjobs.queue": QUEUE, "easyjobs.task": "outer",
                                 "easyjobs.job_id": job}

    spans = await traced.wait_for(
        trace_id, f"easyjobs.queue_wait {QUEUE}.outer", f"easyjobs.run {QUEUE}.outer",
        f"easyjobs.submit {QUEUE}.inner", f"easyjobs.queue_wait {QUEUE}.inner",
        f"easyjobs.run {QUEUE}.inner")
    assert len(spans) == 5
    run_outer = spans[f"easyjobs.run {QUEUE}.outer"]
    assert_attempt(run_outer, submit_id, "outer", job, "succeeded")
    wait_outer = spans[f"easyjobs.queue_wait {QUEUE}.outer"]
    assert wait_outer["parent_id"] == submit_id
    assert wait_outer["start"] <= wait_outer["end"] <= run_outer["start"]
    assert submit.start_time is not None and wait_outer["start"] >= submit.start_time

    inner_submit = spans[f"easyjobs.submit {QUEUE}.inner"]
    assert (inner_submit["kind"], inner_submit["parent_id"]) == ("PRODUCER",
                                                                 run_outer["span_id"])
    inner_job = inner_submit["attributes"]["easyjobs.job_id"]
    assert (await traced.client.job(inner_job))["parent"] == job
    assert_attempt(spans[f"easyjobs.run {QUEUE}.inner"], inner_submit["span_id"], "inner",
                   inner_job, "succeeded")
    assert spans[f"easyjobs.queue_wait {QUEUE}.inner"]["parent_id"] == inner_submit["span_id"]


@pytest.mark.parametrize("traced", ["one-manager"], indirect=True)
async def test_a_job_submitted_over_http_continues_the_callers_traceparent(
        traced: Traced) -> None:
    """POST /{queue}/task/{task} with a W3C ``traceparent``: the job's queue wait and attempt
    are children of the caller's span, in the caller's trace (the manager has no SDK)."""
    trace_id, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    request = urllib.request.Request(
        f"http://127.0.0.1:{traced.port}/{QUEUE}/task/ping?wait=10", data=b"{}", method="POST",
        headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json",
                 "traceparent": f"00-{trace_id}-{caller}-01"})

    def post() -> Any:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return json.loads(response.read())

    body = await asyncio.to_thread(post)
    assert body["status"] == "succeeded" and body["result"] == "pong"
    spans = await traced.wait_for(trace_id, f"easyjobs.queue_wait {QUEUE}.ping",
                                  f"easyjobs.run {QUEUE}.ping")
    assert_attempt(spans[f"easyjobs.run {QUEUE}.ping"], caller, "ping", body["job_id"],
                   "succeeded")
    assert spans[f"easyjobs.queue_wait {QUEUE}.ping"]["parent_id"] == caller


@pytest.mark.parametrize("traced", ["one-manager"], indirect=True)
async def test_run_after_steps_and_run_before_dependencies_continue_the_trace(
        traced: Traced, exporter: InMemorySpanExporter) -> None:
    """The jobs the manager creates for a job run in the trace of the job's submit."""
    first = await traced.client.submit(QUEUE, "first")
    assert await first.result() == {"value": 1}
    trace_id, submit_id = hex_ids(only(exporter.get_finished_spans(),
                                       f"easyjobs.submit {QUEUE}.first"))
    spans = await traced.wait_for(trace_id, f"easyjobs.run {QUEUE}.first",
                                  f"easyjobs.run {QUEUE}.second")
    steps, _ = await traced.client.jobs(task="second")
    [step] = [j for j in steps if j["parent"] == first.id]
    assert_attempt(spans[f"easyjobs.run {QUEUE}.second"], submit_id, "second", step["id"],
                   "succeeded")

    gated = await traced.client.submit(QUEUE, "gated")
    assert await gated.result() == "after prep"
    trace_id, submit_id = hex_ids(only(exporter.get_finished_spans(),
                                       f"easyjobs.submit {QUEUE}.gated"))
    spans = await traced.wait_for(trace_id, f"easyjobs.run {QUEUE}.prep",
                                  f"easyjobs.run {QUEUE}.gated")
    [dependency] = (await gated.info())["dependencies"]
    assert_attempt(spans[f"easyjobs.run {QUEUE}.prep"], submit_id, "prep", dependency,
                   "succeeded")
    assert_attempt(spans[f"easyjobs.run {QUEUE}.gated"], submit_id, "gated", gated.id,
                   "succeeded")


@pytest.mark.parametrize("traced", ["one-manager"], indirect=True)
async def test_a_failed_attempt_is_an_error_span(
        traced: Traced, exporter: InMemorySpanExporter) -> None:
    """A task that raises ends its attempt's span with the outcome failed and an error status."""
    with pytest.raises(TaskFailed):
        await traced.client.call(QUEUE, "broken")
    submit = only(exporter.get_finished_spans(), f"easyjobs.submit {QUEUE}.broken")
    trace_id, submit_id = hex_ids(submit)
    assert submit.status.is_ok  # the submit itself went through
    spans = await traced.wait_for(trace_id, f"easyjobs.run {QUEUE}.broken")
    run = spans[f"easyjobs.run {QUEUE}.broken"]
    job = (submit.attributes or {})["easyjobs.job_id"]
    assert isinstance(job, str)
    assert_attempt(run, submit_id, "broken", job, "failed")
    assert run["status"] == "ERROR"


@pytest.mark.parametrize("traced", ["quiet-worker"], indirect=True)
async def test_a_worker_without_the_sdk_passes_the_trace_on(
        traced: Traced, exporter: InMemorySpanExporter, tmp_path: Path) -> None:
    """A worker with the API alone makes no span, but the job its task submits still carries
    the caller's trace context (read from the job's row in the store)."""
    assert await traced.client.call(QUEUE, "outer", 5) == 11
    submit = only(exporter.get_finished_spans(), f"easyjobs.submit {QUEUE}.outer")
    trace_id, submit_id = hex_ids(submit)
    flags = submit.get_span_context().trace_flags  # type: ignore[union-attr]
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        rows = db.execute("SELECT task, payload FROM jobs WHERE task IN ('outer', 'inner')")
        carried = {task: msgpack.unpackb(payload)[2] for task, payload in rows}
    context = {"traceparent": f"00-{trace_id}-{submit_id}-{flags:02x}"}
    assert carried == {"outer": context, "inner": context}
    assert not traced.spans.exists()


def test_without_opentelemetry_every_hook_is_a_constant_no_op() -> None:
    """With opentelemetry not importable, the hooks hand back one shared do-nothing context."""
    script = """
import sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
from easyjobs import tracing
from easyjobs.protocol.frames import Assign
assign = Assign("0" * 32, "Q", "t", [], {}, 1, {"traceparent": "x"}, 1.0)
hooks = [tracing.submitting("Q", "t", "0" * 32), tracing.attempt(assign, "w")]
assert not tracing.ENABLED and hooks[0] is hooks[1]
for hook in hooks:
    with hook as value:
        assert value is None
tracing.use(None)
print("no-op")
"""
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=False)
    assert (ran.returncode, ran.stdout.strip()) == (0, "no-op"), ran.stderr
