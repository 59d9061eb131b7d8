"""``task.run_local(...)``: a task's body run in-process, its call checked as a remote call's.

A remote call encodes a ``submit`` frame (``SerializationError`` for a value msgpack cannot
carry), the manager binds the arguments to the advertised signature (``InvalidArguments``, in
Python's words), the worker runs the body with the decoded values, and the result must be sent
back (``SerializationError`` again). ``run_local`` takes the same steps with no manager and no
socket, so a unit test meets the same errors and the same values as production: a tuple
argument arrives as a list, a ``def`` body runs in a thread, a subprocess task runs its script.

What differs, on purpose: the body's own exception propagates as it is (not as ``TaskFailed``),
so a test can ``pytest.raises`` it; the task's ``timeout`` and ``retry_policy`` do not apply
(they belong to the runner and the manager); and the body cannot call other tasks — that
raises ``ConfigurationError`` at the call (test such tasks against a real manager, with the
``easyjobs_cluster`` fixture). As for any direct call, ``default_args`` are not used: they are
the arguments of schedule ticks and ``run_before`` dependencies.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ..jobs import JobStatus, new_job_id
from ..protocol.frames import Done, Submit, decode_message, encode_frame
from ..tasks import TaskSpec
from .runner import check_result

running_locally: ContextVar[str | None] = ContextVar("easyjobs_running_locally", default=None)
"""The name of the task whose body ``run_local`` is running in this context, if any."""


def nested_call_refused(task: str) -> str:
    """Why a task run by ``run_local`` cannot call another task."""
    return (f"{task} runs locally (run_local), with no manager to run the tasks it calls: test "
            "it against a real manager instead (the easyjobs_cluster pytest fixture)")


async def run_local(spec: TaskSpec, fn: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
    """Bind ``args`` and ``kwargs`` to ``spec`` as a remote call would, run ``fn`` here, and
    return its result as a caller would receive it."""
    job = new_job_id()
    (sent,) = decode_message(encode_frame(Submit(0, job, spec.queue, spec.name, list(args),
                                                 kwargs)))
    assert isinstance(sent, Submit)
    spec.check(sent.args, sent.kwargs)
    token = running_locally.set(spec.name)
    try:
        if inspect.iscoroutinefunction(fn):
            value = await fn(*sent.args, **sent.kwargs)
        else:
            value = await asyncio.to_thread(fn, *sent.args, **sent.kwargs)
    finally:
        running_locally.reset(token)
    check_result(spec.name, value)
    (done,) = decode_message(encode_frame(Done(job, 1, JobStatus.SUCCEEDED.value, value)))
    assert isinstance(done, Done)
    return done.value
