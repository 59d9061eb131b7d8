"""OpenTelemetry traces of jobs when the ``otel`` extra is installed; no-ops when it is not.

Each job gives one trace: the caller's ``easyjobs.submit <queue>.<task>`` span (producer)
around the submit, then on the worker, as its children, ``easyjobs.queue_wait <queue>.<task>``
(from the job's creation to its first attempt) and one ``easyjobs.run <queue>.<task>`` span
(consumer) per attempt. The submit's context travels in the job (the ``trace`` field,
proto/PROTOCOL.md 5.3), and the attempt's span is current while its task runs, so the jobs a
task submits are its children, and the jobs the manager creates for a job (run_after,
run_before, on_failure) continue the job's trace.

Spans go to OpenTelemetry's global tracer provider (the application configures the SDK), or to
the one given to ``use``. Without opentelemetry installed, ``ENABLED`` is False and every hook
returns a constant at once; with the API alone (FastAPI brings it) and no tracer provider
set, no span is made, but a trace context a job brought still goes on to the jobs it submits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the otel extra is not installed
    ENABLED = False
else:
    ENABLED = True

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

    from .protocol.frames import Assign, TraceContext

QUEUE = "easyjobs.queue"
TASK = "easyjobs.task"
JOB = "easyjobs.job_id"
ATTEMPT = "easyjobs.attempt"
WORKER = "easyjobs.worker"
OUTCOME = "easyjobs.outcome"
"""Span attribute names; ``OUTCOME`` is ``succeeded``, ``failed`` or ``cancelled``."""

_UNTRACED: AbstractContextManager[Any] = nullcontext()

if ENABLED:
    _propagator = TraceContextTextMapPropagator()
    _tracer = _trace.get_tracer("easyjobs")


_provider: TracerProvider | None = None


def use(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` rather than OpenTelemetry's global provider (None: the global
    one again), e.g. a test's own SDK provider; a no-op without the extra."""
    global _tracer, _provider
    if ENABLED:
        _tracer = _trace.get_tracer("easyjobs", tracer_provider=provider)
        _provider = provider


def _quiet() -> bool:
    """True while no tracer provider is set (the API without an SDK): no span can record, so
    the hooks skip making them and only pass on a trace context a job brought."""
    return _provider is None and isinstance(_trace.get_tracer_provider(),
                                            _trace.ProxyTracerProvider)


def submitting(queue: str, task: str, job: str) -> AbstractContextManager[TraceContext | None]:
    """Wrap a submit in its span; the ``with`` value is the context the job carries (None
    when nothing is traced)."""
    if not ENABLED:
        return _UNTRACED
    if _quiet():
        if not _trace.get_current_span().get_span_context().is_valid:
            return _UNTRACED
        carrier: TraceContext = {}  # a job the running task's trace reached goes on in it
        _propagator.inject(carrier)
        return nullcontext(carrier)
    return _submitting(queue, task, job)


@contextmanager
def _submitting(queue: str, task: str, job: str) -> Iterator[TraceContext | None]:
    with _tracer.start_as_current_span(
        f"easyjobs.submit {queue}.{task}", kind=_trace.SpanKind.PRODUCER,
        attributes={QUEUE: queue, TASK: task, JOB: job},
    ):
        carrier: TraceContext = {}
        _propagator.inject(carrier)
        yield carrier or None


def continuing(headers: Mapping[str, str]) -> AbstractContextManager[None]:
    """Make the caller's trace context in ``headers`` (an HTTP request's W3C ``traceparent``
    and ``tracestate``) current, so that a submit inside continues the caller's trace."""
    if not ENABLED or "traceparent" not in headers:
        return nullcontext()
    return _continuing({name: headers[name] for name in ("traceparent", "tracestate")
                        if name in headers})


@contextmanager
def _continuing(carrier: dict[str, str]) -> Iterator[None]:
    from opentelemetry import context
    token = context.attach(_propagator.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


def attempt(assign: Assign, worker: str) -> AbstractContextManager[Span | None]:
    """Wrap one attempt of ``assign`` in its span, current while the task runs (the ``with``
    value; None when nothing is traced); the first attempt also records the queue wait. The
    caller reports how it ended with ``finished``."""
    if not ENABLED or (not assign.trace and _quiet()):
        return _UNTRACED
    if _quiet():  # the job's trace goes on in the jobs its task submits
        return _trace.use_span(_trace.get_current_span(_propagator.extract(assign.trace)))
    return _attempt(assign, worker)


@contextmanager
def _attempt(assign: Assign, worker: str) -> Iterator[Span]:
    parent = _propagator.extract(assign.trace) if assign.trace else None
    name = f"{assign.queue}.{assign.task}"
    attributes: dict[str, str | int] = {QUEUE: assign.queue, TASK: assign.task, JOB: assign.job}
    if assign.attempt == 1 and assign.created is not None:
        now = time.time_ns()
        # The manager's clock set created: never start after now on a clock that lags.
        start = min(now, int(assign.created * 1e9))
        _tracer.start_span(f"easyjobs.queue_wait {name}", parent, attributes=attributes,
                           start_time=start).end(now)
    attributes[ATTEMPT] = assign.attempt
    attributes[WORKER] = worker
    with _tracer.start_as_current_span(
        f"easyjobs.run {name}", parent, kind=_trace.SpanKind.CONSUMER, attributes=attributes,
        record_exception=False, set_status_on_exception=False,
    ) as span:
        yield span


def finished(span: Span, outcome: str, error: BaseException | None = None) -> None:
    """Record how an attempt ended on its span: ``outcome``, and the exception it failed with."""
    span.set_attribute(OUTCOME, outcome)
    if error is not None:
        span.record_exception(error)
        span.set_status(_trace.StatusCode.ERROR, type(error).__name__)
