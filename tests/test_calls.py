"""Tasks as awaitable remote functions, against a real manager: results, job handles, the
client's API, remote failures, and every call the manager must refuse before queueing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from easyjobs import (
    EasyJobsClient,
    EasyJobsError,
    EasyJobsWorker,
    InvalidArguments,
    Job,
    JobStatus,
    ResultTimeout,
    SerializationError,
    TaskFailed,
    UnknownJob,
    UnknownTask,
)

from .conftest import RunningManager
from .mesh import Gauge, count_jobs, registered
from .utils import TIMEOUT, is_job_id, wait_until

WorkerFactory = Callable[..., EasyJobsWorker]


async def test_awaiting_a_task_returns_its_result(worker_factory: WorkerFactory) -> None:
    """`await task(...)` runs the task on a worker and returns what it returned."""
    worker = worker_factory()

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    await worker.start()
    assert await add(2, 3) == 5
    assert await add(b=10, a=1) == 11


async def test_submit_returns_a_job_handle(worker_factory: WorkerFactory) -> None:
    """`task.submit(...)` returns a Job whose id, result, status and record reflect the run."""
    worker = worker_factory(name="w-handle")

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    await worker.start()
    job = await add.submit(1, 2)
    assert isinstance(job, Job) and is_job_id(job.id)
    assert await job.result(timeout=TIMEOUT) == 3
    assert await job.status() is JobStatus.SUCCEEDED
    info = await job.info()
    assert info["id"] == job.id
    assert (info["queue"], info["task"]) == ("ETL", "add")
    assert (info["args"], info["kwargs"]) == ([1, 2], {})
    assert info["status"] == "succeeded" and info["result"] == 3 and info["error"] is None
    assert info["attempts"] == 1 and info["worker"] == "w-handle"
    assert info["created_at"] <= info["started_at"] <= info["finished_at"]


async def test_job_status_follows_the_job(worker_factory: WorkerFactory) -> None:
    """A job reads `running` while its body runs and `succeeded` once it returned."""
    worker = worker_factory(max_tasks=1)
    gauge = Gauge()

    @worker.task()
    async def hold(label: str) -> str:
        return await gauge.hold(label)  # type: ignore[no-any-return]

    await worker.start()
    first = await hold.submit("first")
    await gauge.until_running(1)
    second = await hold.submit("second")  # the only slot is taken
    assert await first.status() is JobStatus.RUNNING
    assert await second.status() is JobStatus.QUEUED
    gauge.gate.set()
    assert await second.result(timeout=TIMEOUT) == "second"
    assert await first.status() is JobStatus.SUCCEEDED


async def test_result_timeout_leaves_the_job_awaitable(
    worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """`result(timeout=...)` raises ResultTimeout (a TimeoutError); the job can be awaited again."""
    worker = worker_factory()
    gauge = Gauge()

    @worker.task()
    async def hold(label: str) -> str:
        return await gauge.hold(label)  # type: ignore[no-any-return]

    await worker.start()
    job = await hold.submit("x")
    with pytest.raises(ResultTimeout):
        await job.result(timeout=0.05)
    with pytest.raises(TimeoutError):
        await client.result(job.id, timeout=0.05)
    gauge.gate.set()
    assert await job.result(timeout=TIMEOUT) == "x"
    assert await client.result(job.id, timeout=TIMEOUT) == "x"


async def test_client_api(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """EasyJobsClient.call/submit/result/job/task reach the worker's task and its records."""
    worker = worker_factory()

    @worker.task()
    async def greet(name: str, punctuation: str = "!") -> str:
        return f"hello {name}{punctuation}"

    await worker.start()
    await registered(manager, "ETL", "greet")
    assert await client.call("ETL", "greet", "ann") == "hello ann!"
    assert await client.call("ETL", "greet", name="bob", punctuation="?") == "hello bob?"

    job = await client.submit("ETL", "greet", "cy")
    assert is_job_id(job.id)
    assert await client.result(job.id, timeout=TIMEOUT) == "hello cy!"
    assert await job.result(timeout=TIMEOUT) == "hello cy!"
    record = await client.job(job.id)
    assert record["status"] == "succeeded" and record["result"] == "hello cy!"

    remote = client.task("ETL", "greet")
    assert await remote("dee") == "hello dee!"
    handle = await remote.submit(name="eve")
    assert await handle.result(timeout=TIMEOUT) == "hello eve!"


async def test_unknown_job_id(client: EasyJobsClient) -> None:
    """Asking for a job id the manager never saw raises UnknownJob."""
    with pytest.raises(UnknownJob):
        await client.result("0" * 32, timeout=TIMEOUT)
    with pytest.raises(UnknownJob):
        await client.job("f" * 32)


async def test_remote_failure_raises_task_failed(
    worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A task that raises fails its caller with TaskFailed carrying type, message, traceback."""
    worker = worker_factory()

    @worker.task()
    async def explode(value: int) -> None:
        raise ValueError(f"bad value {value}")

    await worker.start()
    with pytest.raises(TaskFailed) as caught:
        await explode(7)
    failed = caught.value
    assert isinstance(failed, EasyJobsError)
    assert failed.type == "ValueError"
    assert failed.message == "bad value 7"
    assert 'raise ValueError(f"bad value {value}")' in failed.traceback
    assert "in explode" in failed.traceback
    assert is_job_id(failed.job_id)

    record = await client.job(failed.job_id)
    assert record["status"] == "failed"
    assert record["error"]["type"] == "ValueError"
    with pytest.raises(TaskFailed) as again:
        await client.result(failed.job_id, timeout=TIMEOUT)
    assert again.value.message == "bad value 7"


async def test_unknown_task(manager: RunningManager, client: EasyJobsClient) -> None:
    """A task nobody ever registered raises UnknownTask at the call, and nothing is queued."""
    with pytest.raises(UnknownTask, match="never_registered"):
        await client.call("ETL", "never_registered", 1)
    with pytest.raises(UnknownTask):
        await client.submit("NOWHERE", "never_registered")
    assert count_jobs(manager.db, "never_registered") == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "problem"),
    [
        ((1,), {}, "missing 1 required argument: 'b'"),
        ((), {"a": 1}, "missing 1 required argument: 'b'"),
        ((1, 2), {"c": 3}, "unexpected keyword argument 'c'"),
        ((1, 2, 3), {}, "takes 2 positional arguments but 3 were given"),
        ((1,), {"a": 2, "b": 3}, "multiple values for argument 'a'"),
        (("1", 2), {}, r"^pair\(\) argument 'a' must be an integer$"),
        ((1,), {"b": [2]}, r"^pair\(\) argument 'b' must be an integer$"),
        ((True, 2), {}, "argument 'a' must be an integer"),
    ],
    ids=["missing", "missing-kw", "unexpected-kwarg", "too-many-positional", "twice",
         "wrong-type", "wrong-type-kw", "bool-for-int"],
)
async def test_invalid_arguments_are_refused_before_queueing(
    manager: RunningManager,
    worker_factory: WorkerFactory,
    client: EasyJobsClient,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    problem: str,
) -> None:
    """Arguments that do not bind, or do not match the annotations, raise InvalidArguments
    naming the problem; no job row exists."""
    worker = worker_factory()

    @worker.task()
    async def pair(a: int, b: int) -> list[int]:
        return [a, b]

    @worker.task()
    async def other() -> str:
        return "ok"

    await worker.start()
    with pytest.raises(InvalidArguments, match=problem):
        await pair(*args, **kwargs)
    with pytest.raises(InvalidArguments, match=problem):
        await client.call("ETL", "pair", *args, **kwargs)
    with pytest.raises(InvalidArguments, match=problem):
        await client.submit("ETL", "pair", *args, **kwargs)
    # Store writes apply in order: once a later job's result is back, an earlier insert would
    # have been committed too.
    assert await other() == "ok"
    assert count_jobs(manager.db, "pair") == 0
    assert count_jobs(manager.db, "other") == 1


async def test_known_task_without_a_live_worker_waits_for_one(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A task registered once, whose worker left, is queued and runs when a worker connects."""
    first = worker_factory(name="first")

    @first.task()
    async def square(x: int) -> int:
        return x * x

    await first.start()
    assert await square(3) == 9
    await first.stop(grace=0)

    job = await client.submit("ETL", "square", 4)

    async def queued() -> bool:
        return await job.status() is JobStatus.QUEUED

    await wait_until(queued, what="the job to be queued")
    with pytest.raises(ResultTimeout):
        await job.result(timeout=0.05)

    second = worker_factory(name="second")

    @second.task()
    async def square(x: int) -> int:  # noqa: F811  (the same task, on a new worker)
        return x * x

    await second.start()
    assert await job.result(timeout=TIMEOUT) == 16
    assert (await job.info())["worker"] == "second"


async def test_tasks_registered_after_connecting_are_advertised(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A task decorated after the worker connected is advertised with its signature and runs."""
    worker = worker_factory()

    @worker.task()
    async def early() -> str:
        return "early"

    await worker.start()
    assert await early() == "early"

    @worker.task()
    async def late(x: int, *, scale: int = 2) -> int:
        return x * scale

    assert await late(5) == 10  # over the worker's own link, ordered after its register frame
    await registered(manager, "ETL", "late")
    assert await client.call("ETL", "late", 5, scale=3) == 15
    with pytest.raises(InvalidArguments, match="positional"):
        await client.call("ETL", "late", 5, 3)


async def test_unserialisable_arguments_fail_at_the_call(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """Arguments msgpack cannot carry raise SerializationError at the call; nothing is queued."""
    worker = worker_factory()

    @worker.task()
    async def echo(value: Any) -> Any:
        return value

    await worker.start()
    with pytest.raises(SerializationError, match="object"):
        await echo(object())
    with pytest.raises(SerializationError):
        await echo.submit({1, 2})
    with pytest.raises(SerializationError):
        await client.call("ETL", "echo", value=asyncio.Event())
    with pytest.raises(SerializationError):
        await client.submit("ETL", "echo", b"x" * (2 << 20))  # over the frame size limit
    assert await echo([1, "two", {"three": 3.0}, b"four", None]) == [
        1, "two", {"three": 3.0}, b"four", None,
    ]
    assert count_jobs(manager.db, "echo") == 1


async def test_unserialisable_result_fails_the_job_not_the_worker(
    worker_factory: WorkerFactory,
) -> None:
    """A result msgpack cannot carry fails the job with SerializationError; the worker goes on."""
    worker = worker_factory(max_tasks=1)

    @worker.task()
    async def bad_result() -> Any:
        return object()

    @worker.task()
    async def huge_result() -> bytes:
        return b"x" * (2 << 20)  # over the frame size limit

    @worker.task()
    async def fine() -> str:
        return "still serving"

    await worker.start()
    for task in (bad_result, huge_result):
        with pytest.raises(TaskFailed) as caught:
            await task()
        assert caught.value.type == "SerializationError"
        assert await fine() == "still serving"
