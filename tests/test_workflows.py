"""Workflows against a real manager, real workers and real SQLite: the seed's ETL chain
(run_after, recursive run_before), on_failure, retry policies, cancel, timeouts, cycles, cron
schedules, the ``easyjobs jobs``/``schedules``/``cancel`` commands, and manager restarts and
crashes in the middle of a workflow.

The tasks record what they saw (order, arguments, run counts); the tests wait on those events,
on job results and on bounded ``wait_until``s, never on fixed sleeps. The ``manager`` fixture is
overridden here so retries back off from 0.02 s instead of 1 s.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from easyjobs import (
    ConfigurationError,
    EasyJobsClient,
    EasyJobsWorker,
    JobCancelled,
    RemoteTask,
    TaskFailed,
    UnknownTask,
)
from easyjobs.manager.scheduler import next_tick
from easyjobs.remote import current_job
from easyjobs.store.base import unpack

from .conftest import Process, RunningManager
from .mesh import registered, stored_job
from .processes import run_cli, serving, spawn_manager, wait_listening
from .utils import SECRET, TIMEOUT, free_port, wait_until

WorkerFactory = Callable[..., EasyJobsWorker]
ClientFactory = Callable[..., Any]

RETRY_BASE = 0.02
"""Seconds: the first retry of a failed attempt waits 0.01-0.02 s, the n-th 2**(n-1) times that."""

ETL_TASKS = ("extract", "transform", "load", "deploy_environment", "prepare_db",
             "configure_environment", "compute")
SEED_DATA = {"a": 1, "b": 2, "c": 3}


@pytest.fixture
async def manager(manager_factory: Callable[..., Any]) -> RunningManager:
    """One running manager (SQLite in tmp_path) whose retries back off from RETRY_BASE."""
    return await manager_factory(retry_base=RETRY_BASE)  # type: ignore[no-any-return]


async def records(client: EasyJobsClient, **filters: Any) -> list[dict[str, Any]]:
    """Every job matching ``filters`` (newest first; the tests make far fewer than a page)."""
    jobs, cursor = await client.jobs(limit=1000, **filters)
    assert cursor is None
    return jobs


def by_task(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Jobs keyed by task name; fails if a task has more than one job."""
    counts = Counter(job["task"] for job in jobs)
    assert all(n == 1 for n in counts.values()), counts
    return {job["task"]: job for job in jobs}


# ---------------------------------------------------------------------------- the seed's ETL


class Trace:
    """What the ETL tasks saw: start/end events in order, their arguments, and run counts.

    A task listed in ``gates`` stops after its start until its gate is set, so a test can act
    (kill the manager) while it runs.
    """

    def __init__(self, gated: tuple[str, ...] = ()) -> None:
        self.events: list[tuple[str, str]] = []
        self.arguments: dict[str, Any] = {}
        self.runs: Counter[str] = Counter()
        self.started: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.ended: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.gates = {name: asyncio.Event() for name in gated}

    async def start(self, task: str, arguments: Any = None) -> None:
        self.events.append((task, "start"))
        self.runs[task] += 1
        self.arguments[task] = copy.deepcopy(arguments)
        self.started[task].set()
        if task in self.gates:
            await self.gates[task].wait()

    def end(self, task: str) -> None:
        self.events.append((task, "end"))
        self.ended[task].set()

    def at(self, task: str, event: str) -> int:
        return self.events.index((task, event))


def seed_etl(worker: EasyJobsWorker, trace: Trace) -> dict[str, RemoteTask]:
    """The seed's ETL tasks (tasks.md) with the same options, fast and instrumented.

    Left out: extract's ``schedule`` (cron has its own tests; a minute tick during a test would
    start a second chain) and compute's ``subprocess=True`` (a plain task here).
    """

    @worker.task(run_after=["transform"])
    async def extract(url: str) -> dict[str, Any]:
        await trace.start("extract", url)
        data = dict(SEED_DATA)
        trace.end("extract")
        return {"data": data}

    @worker.task(run_after=["load"])
    async def transform(data: dict[str, Any]) -> dict[str, Any]:
        await trace.start("transform", data)
        for k in data.copy():
            data[k] = int(data[k]) + 2
        trace.end("transform")
        return {"data": data}

    @worker.task(on_failure="failure_notify", run_after=["compute"])
    async def load(data: Any) -> dict[str, Any]:
        await trace.start("load", data)
        trace.end("load")
        return {"data": data}

    @worker.task()
    async def failure_notify(job_failed: Any) -> Any:
        await trace.start("failure_notify", job_failed)
        trace.end("failure_notify")
        return job_failed

    async def environment(name: str, other: str) -> str:
        await trace.start(name)
        # Each waits for the other to have started: they can only finish by running together.
        await asyncio.wait_for(trace.started[other].wait(), TIMEOUT)
        trace.end(name)
        return f"{name} - completed"

    @worker.task()
    async def deploy_environment() -> str:
        return await environment("deploy_environment", "prepare_db")

    @worker.task()
    async def prepare_db() -> str:
        return await environment("prepare_db", "deploy_environment")

    @worker.task(run_before=["deploy_environment", "prepare_db"])
    async def configure_environment() -> str:
        await trace.start("configure_environment")
        trace.end("configure_environment")
        return "configure_environment - finished"

    @worker.task(run_before=["configure_environment"])
    async def compute(data: dict[str, Any]) -> dict[str, Any]:
        await trace.start("compute", data)
        trace.end("compute")
        return {"computed": data}

    return {"extract": extract, "compute": compute}


def assert_etl_links(jobs: dict[str, dict[str, Any]], extract_id: str) -> None:
    """The parent links and dependency lists of one ETL chain."""
    parent_of = {
        "extract": None,
        "transform": "extract",
        "load": "transform",
        "compute": "load",
        "configure_environment": "compute",
        "deploy_environment": "configure_environment",
        "prepare_db": "configure_environment",
    }
    assert jobs["extract"]["id"] == extract_id
    for task, parent in parent_of.items():
        assert jobs[task]["parent"] == (jobs[parent]["id"] if parent else None), task
        assert jobs[task]["queue"] == "ETL"
        assert jobs[task]["on_failure_job"] is None and jobs[task]["handler_for"] is None
    assert jobs["compute"]["dependencies"] == [jobs["configure_environment"]["id"]]
    assert jobs["configure_environment"]["dependencies"] == [
        jobs["deploy_environment"]["id"], jobs["prepare_db"]["id"]]
    for task in ("extract", "transform", "load", "deploy_environment", "prepare_db"):
        assert jobs[task]["dependencies"] == []


async def test_seed_etl_flow_runs_in_order_with_each_result_passed_on(
    worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """extract -> transform -> load -> (deploy_environment | prepare_db) -> configure_environment
    -> compute, each receiving its parent's result, with links and statuses recorded."""
    worker = worker_factory("ETL", max_tasks=5)
    trace = Trace()
    tasks = seed_etl(worker, trace)
    await worker.start()

    job = await tasks["extract"].submit(url="http://stats")
    # Awaiting the parent gives its own result; the chain goes on by itself.
    assert await job.result(timeout=TIMEOUT) == {"data": SEED_DATA}
    await asyncio.wait_for(trace.ended["compute"].wait(), TIMEOUT)
    compute_id = by_task(await records(client, task="compute"))["compute"]["id"]
    assert await client.result(compute_id, timeout=TIMEOUT) == {
        "computed": {"a": 3, "b": 4, "c": 5}}

    assert trace.arguments == {
        "extract": "http://stats",
        "transform": SEED_DATA,
        "load": {"a": 3, "b": 4, "c": 5},
        "deploy_environment": None,
        "prepare_db": None,
        "configure_environment": None,
        "compute": {"a": 3, "b": 4, "c": 5},
    }
    at = trace.at
    assert at("extract", "end") < at("transform", "start")
    assert at("transform", "end") < at("load", "start")
    assert at("load", "end") < min(at("deploy_environment", "start"), at("prepare_db", "start"))
    # Overlapping: both started before either ended.
    assert max(at("deploy_environment", "start"), at("prepare_db", "start")) < min(
        at("deploy_environment", "end"), at("prepare_db", "end"))
    assert max(at("deploy_environment", "end"), at("prepare_db", "end")) < at(
        "configure_environment", "start")
    assert at("configure_environment", "end") < at("compute", "start")
    assert trace.runs == Counter({name: 1 for name in ETL_TASKS})

    jobs = by_task(await records(client, queue="ETL"))
    assert set(jobs) == set(ETL_TASKS)  # and no failure_notify job
    assert_etl_links(jobs, job.id)
    assert {(j["status"], j["attempts"]) for j in jobs.values()} == {("succeeded", 1)}
    assert jobs["transform"]["kwargs"] == {"data": SEED_DATA}
    assert jobs["compute"]["result"] == {"computed": {"a": 3, "b": 4, "c": 5}}
    # client.job() returns the same links as the listing.
    single = await client.job(jobs["configure_environment"]["id"])
    assert single["dependencies"] == jobs["configure_environment"]["dependencies"]
    assert single["parent"] == jobs["compute"]["id"]


async def test_manager_task_run_after(manager: RunningManager, client: EasyJobsClient) -> None:
    """The seed's @manager.task(namespace='general', run_after=['more_general_work']) chains."""
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @manager.manager.task(namespace="general", run_after=["more_general_work"])
    async def general_work(general_data: dict[str, Any]) -> dict[str, Any]:
        return {"general_results": general_data}

    @manager.manager.task(namespace="general")
    async def more_general_work(general_results: Any) -> str:
        done.set_result(general_results)
        return "more_general_results"

    job = await general_work.submit({"x": 1})
    assert await job.result(timeout=TIMEOUT) == {"general_results": {"x": 1}}
    assert await asyncio.wait_for(done, TIMEOUT) == {"x": 1}
    (child,) = await records(client, queue="general", task="more_general_work")
    assert child["parent"] == job.id
    assert await client.result(child["id"], timeout=TIMEOUT) == "more_general_results"


# ---------------------------------------------------------------------------- on_failure


async def test_on_failure_receives_job_failed_after_the_retries(
    worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A retry_once task failing twice creates its on_failure job with `job_failed` describing
    the failure (id, queue, task, arguments, error, attempts)."""
    worker = worker_factory()
    received: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    attempts: list[int] = []

    @worker.task(on_failure="notify")
    async def finance_work(employee_id: str, employee_data: dict[str, Any]) -> None:
        attempts.append(len(attempts) + 1)
        raise ValueError(f"no payroll for {employee_id} (attempt {len(attempts)})")

    @worker.task()
    async def notify(job_failed: dict[str, Any]) -> str:
        received.set_result(job_failed)
        return f"email sent for {job_failed['job_id']}"

    await worker.start()
    job = await finance_work.submit("e7", employee_data={"salary": 1})
    with pytest.raises(TaskFailed) as failed:
        await job.result(timeout=TIMEOUT)
    assert (failed.value.type, failed.value.message) == (
        "ValueError", "no payroll for e7 (attempt 2)")

    job_failed = await asyncio.wait_for(received, TIMEOUT)
    assert set(job_failed) == {"job_id", "queue", "task", "args", "kwargs", "error_type",
                               "message", "traceback", "attempts"}
    assert {k: v for k, v in job_failed.items() if k != "traceback"} == {
        "job_id": job.id,
        "queue": "ETL",
        "task": "finance_work",
        "args": ["e7"],
        "kwargs": {"employee_data": {"salary": 1}},
        "error_type": "ValueError",
        "message": "no payroll for e7 (attempt 2)",
        "attempts": 2,
    }
    assert "ValueError: no payroll for e7 (attempt 2)" in job_failed["traceback"]
    assert attempts == [1, 2]

    record = await job.info()
    assert (record["status"], record["attempts"]) == ("failed", 2)
    handler = await client.job(record["on_failure_job"])
    assert (handler["task"], handler["handler_for"], handler["parent"]) == (
        "notify", job.id, job.id)
    assert await client.result(handler["id"], timeout=TIMEOUT) == f"email sent for {job.id}"


async def test_failing_failure_handler_does_not_trigger_itself(
    worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """An on_failure handler that fails (even one naming itself as on_failure) creates no
    further handler job."""
    worker = worker_factory()
    handler_runs: list[str] = []

    @worker.task(on_failure="send_failure_email", retry_policy="never")
    async def finance_work() -> None:
        raise RuntimeError("books do not balance")

    @worker.task(on_failure="send_failure_email", retry_policy="never")
    async def send_failure_email(job_failed: dict[str, Any]) -> None:
        handler_runs.append(job_failed["job_id"])
        raise ConnectionError("smtp down")

    await worker.start()
    job = await finance_work.submit()
    with pytest.raises(TaskFailed):
        await job.result(timeout=TIMEOUT)
    handler_id = (await job.info())["on_failure_job"]
    with pytest.raises(TaskFailed) as failed:
        await client.result(handler_id, timeout=TIMEOUT)
    assert failed.value.type == "ConnectionError"
    # A handler for the handler would have been committed with its failure: there is none.
    handler = await client.job(handler_id)
    assert (handler["status"], handler["on_failure_job"], handler["handler_for"]) == (
        "failed", None, job.id)
    assert [j["id"] for j in await records(client, task="send_failure_email")] == [handler_id]
    assert handler_runs == [job.id]


# ---------------------------------------------------------------------------- retry policies


@pytest.mark.parametrize(("policy", "runs"), [("retry_once", 2), ("never", 1), (None, 2)])
async def test_retry_policy_sets_the_number_of_attempts(
    worker_factory: WorkerFactory, policy: str | None, runs: int
) -> None:
    """retry_once (the default) runs a failing task exactly twice; never runs it once."""
    worker = worker_factory()
    calls: list[int] = []

    @worker.task(retry_policy=policy)
    async def always_fails(n: int) -> None:
        calls.append(n)
        raise RuntimeError(f"failure {len(calls)}")

    await worker.start()
    job = await always_fails.submit(1)
    with pytest.raises(TaskFailed) as failed:
        await job.result(timeout=TIMEOUT)
    assert failed.value.message == f"failure {runs}"
    info = await job.info()
    assert (info["status"], info["attempts"], info["error"]["message"]) == (
        "failed", runs, f"failure {runs}")
    assert calls == [1] * runs  # the failure is final: no attempt can follow


async def test_retry_once_second_attempt_result_is_the_jobs(worker_factory: WorkerFactory) -> None:
    """A first attempt that fails is retried; the second attempt's result is the job's."""
    worker = worker_factory()
    calls: list[int] = []

    @worker.task()
    async def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transient")
        return "ok"

    await worker.start()
    job = await flaky.submit()
    assert await job.result(timeout=TIMEOUT) == "ok"
    info = await job.info()
    assert (info["status"], info["attempts"], info["error"]) == ("succeeded", 2, None)


async def test_retry_always_backs_off_and_a_running_attempt_can_be_cancelled(
    worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """retry_always (spelled `always`) retries with growing delays, shows `retrying` with the
    next attempt's time, and `await job.cancel()` stops it, cancelling the running attempt."""
    worker = worker_factory()
    starts: list[float] = []
    last_attempt = asyncio.Event()
    observed_cancel = asyncio.Event()
    failing_attempts = 6

    @worker.task(retry_policy="always")
    async def stubborn() -> None:
        starts.append(time.monotonic())
        if len(starts) <= failing_attempts:
            raise RuntimeError(f"attempt {len(starts)}")
        last_attempt.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            observed_cancel.set()
            raise

    await worker.start()
    job = await stubborn.submit()

    seen: list[dict[str, Any]] = []

    async def retrying_after_last_failure() -> bool:
        seen.append(await job.info())
        return seen[-1]["status"] == "retrying" and seen[-1]["attempts"] == failing_attempts

    # The wait before attempt 7 is 0.32-0.64 s: long enough to be seen.
    await wait_until(retrying_after_last_failure, what="the job to wait for attempt 7")
    info = seen[-1]
    assert info["error"]["message"] == f"attempt {failing_attempts}"
    assert info["worker"] is None
    assert 0 < info["next_attempt_at"] - time.time() <= RETRY_BASE * 2 ** failing_attempts / 2

    await asyncio.wait_for(last_attempt.wait(), TIMEOUT)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    for n, gap in enumerate(gaps, start=1):
        # The n-th retry waits at least half of RETRY_BASE * 2**(n-1) (jitter), plus overhead.
        assert gap >= 0.5 * RETRY_BASE * 2 ** (n - 1), gaps
    assert gaps[-1] > 4 * gaps[0] and gaps[-1] > gaps[-3] > gaps[0], gaps

    running = await job.info()
    assert (running["status"], running["attempts"]) == ("running", failing_attempts + 1)
    cancelled = await job.cancel()
    assert cancelled["status"] == "cancelled"
    with pytest.raises(JobCancelled):
        await job.result(timeout=TIMEOUT)
    await asyncio.wait_for(observed_cancel.wait(), TIMEOUT)  # the worker stopped the attempt
    info = await client.job(job.id)
    assert (info["status"], info["attempts"], info["next_attempt_at"]) == (
        "cancelled", failing_attempts + 1, None)
    assert info["error"]["type"] == "JobCancelled"
    assert len(starts) == failing_attempts + 1  # no attempt after the cancel


async def test_retrying_job_cancelled_from_the_cli(
    manager_factory: Callable[..., Any], worker_factory: WorkerFactory,
    client_factory: ClientFactory, tmp_path: Path,
) -> None:
    """`easyjobs cancel JOB_ID` cancels a job waiting for its next attempt; none follows."""
    slow = await manager_factory(db=tmp_path / "slow-retries.db", retry_base=30.0)
    worker = worker_factory(port=slow.port)
    client: EasyJobsClient = await client_factory(port=slow.port)
    calls: list[int] = []

    @worker.task(retry_policy="retry_always")
    async def send_failure_email(reason: str) -> None:
        calls.append(1)
        raise ConnectionError("smtp down")

    await worker.start()
    job = await send_failure_email.submit("reason")

    async def retrying() -> bool:
        return (await job.info())["status"] == "retrying"

    await wait_until(retrying, what="the first attempt to fail")
    ran = await run_cli("cancel", "--port", str(slow.port), job.id)
    assert ran.code == 0, ran.err
    assert json.loads(ran.out) == {"job_id": job.id, "status": "cancelled"}
    with pytest.raises(JobCancelled):
        await client.result(job.id, timeout=TIMEOUT)
    info = await client.job(job.id)
    assert (info["status"], info["attempts"], info["next_attempt_at"]) == ("cancelled", 1, None)
    assert job.id not in slow.manager.core.active  # its retry timer went with it
    assert calls == [1]


# ---------------------------------------------------------------------------- timeout


async def test_timeout_cancels_the_attempt_on_the_worker_and_counts_as_a_failure(
    worker_factory: WorkerFactory,
) -> None:
    """An attempt over `timeout=` is cancelled on the worker and fails with TaskTimeout; with
    retry_once that happens twice."""
    worker = worker_factory()
    cancelled: list[int] = []

    @worker.task(timeout=0.1)
    async def slow() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    @worker.task(timeout=5)
    async def quick() -> str:
        return "in time"

    await worker.start()
    job = await slow.submit()
    with pytest.raises(TaskFailed) as failed:
        await job.result(timeout=TIMEOUT)
    assert failed.value.type == "TaskTimeout"
    assert "0.1s timeout" in failed.value.message
    info = await job.info()
    assert (info["status"], info["attempts"], info["error"]["type"]) == (
        "failed", 2, "TaskTimeout")
    assert cancelled == [1, 1]
    assert await asyncio.wait_for(quick(), TIMEOUT) == "in time"


# ---------------------------------------------------------------------------- run_before


async def test_dependency_failure_fails_the_waiting_job_and_fires_its_on_failure(
    worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A failed run_before dependency fails the dependent job (naming it) without running it,
    and the dependent's on_failure receives the failure."""
    worker = worker_factory()
    handled: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    ran: list[str] = []

    @worker.task()
    async def deploy_environment() -> str:
        return "deployed"

    @worker.task(retry_policy="never")
    async def prepare_db() -> None:
        raise RuntimeError("database unreachable")

    @worker.task(run_before=["deploy_environment", "prepare_db"], on_failure="notify")
    async def configure_environment() -> None:
        ran.append("configure_environment")

    @worker.task()
    async def notify(job_failed: dict[str, Any]) -> None:
        handled.set_result(job_failed)

    await worker.start()
    job = await configure_environment.submit()
    with pytest.raises(TaskFailed) as failed:
        await job.result(timeout=TIMEOUT)
    info = await job.info()
    deps = {(await client.job(dep))["task"]: dep for dep in info["dependencies"]}
    assert list(deps) == ["deploy_environment", "prepare_db"]
    assert failed.value.type == "DependencyFailed"
    assert "prepare_db" in failed.value.message and deps["prepare_db"] in failed.value.message
    assert "RuntimeError: database unreachable" in failed.value.message
    assert (info["status"], info["attempts"]) == ("failed", 0)
    assert ran == []

    job_failed = await asyncio.wait_for(handled, TIMEOUT)
    assert (job_failed["job_id"], job_failed["task"], job_failed["error_type"]) == (
        job.id, "configure_environment", "DependencyFailed")
    assert "prepare_db" in job_failed["message"]
    assert info["on_failure_job"] is not None
    prepare = await client.job(deps["prepare_db"])
    assert (prepare["status"], prepare["parent"]) == ("failed", job.id)


def test_run_before_cycle_is_rejected_at_decoration() -> None:
    """Decorating the task that closes a run_before cycle raises ConfigurationError naming it."""
    worker = EasyJobsWorker(None, None, "127.0.0.1", 1, SECRET, "ETL")

    @worker.task(run_before=["prepare_db"])
    async def deploy_environment() -> None: ...

    @worker.task(run_before=["configure_environment"])
    async def prepare_db() -> None: ...

    with pytest.raises(ConfigurationError,
                       match="run_before cycle: deploy_environment -> prepare_db -> "
                             "configure_environment -> deploy_environment"):

        @worker.task(run_before=["deploy_environment"])
        async def configure_environment() -> None: ...


async def test_run_before_cycle_across_two_workers_is_refused_at_registration(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Tasks of two workers that form a cycle: the manager refuses the second registration
    (the worker logs the named cycle) and its tasks cannot be called (UnknownTask)."""
    first, second = worker_factory(name="first"), worker_factory(name="second")

    @first.task(run_before=["prepare_db"])
    async def deploy_environment() -> str:
        return "deployed"

    @second.task(run_before=["deploy_environment"])
    async def prepare_db() -> str:
        return "prepared"

    @second.task()
    async def innocent() -> str:
        return "refused with its batch"

    await first.start()
    await registered(manager, "ETL", "deploy_environment")
    await second.start()

    def refusal() -> str | None:
        return next((r.getMessage() for r in caplog.records
                     if r.name == "easyjobs.worker" and "run_before cycle" in r.getMessage()),
                    None)

    await wait_until(lambda: refusal() is not None, what="the worker to report the refusal")
    message = refusal()
    assert message is not None
    assert "deploy_environment -> prepare_db -> deploy_environment" in message
    assert "prepare_db" in message and "innocent" in message
    assert ("ETL", "prepare_db") not in manager.manager.core.tasks
    for task in ("prepare_db", "innocent", "deploy_environment"):
        with pytest.raises(UnknownTask):
            await client.submit("ETL", task)
    caplog.clear()


# ---------------------------------------------------------------------------- run_after


async def test_run_after_child_whose_arguments_do_not_bind_fails_and_fires_on_failure(
    worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """A run_after child that cannot take its parent's result is created failed with
    InvalidArguments (never run), and its on_failure handler runs."""
    worker = worker_factory()
    handled: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    ran: list[Any] = []

    @worker.task(run_after=["load"])
    async def transform() -> dict[str, Any]:
        return {"rows": [1, 2]}  # load takes `data`

    @worker.task(on_failure="failure_notify")
    async def load(data: Any) -> None:
        ran.append(data)

    @worker.task()
    async def failure_notify(job_failed: dict[str, Any]) -> str:
        handled.set_result(job_failed)
        return "notified"

    await worker.start()
    parent = await transform.submit()
    assert await parent.result(timeout=TIMEOUT) == {"rows": [1, 2]}
    # The child was committed with the parent's result: it is there now.
    (child,) = await records(client, task="load")
    assert (child["status"], child["parent"], child["attempts"]) == ("failed", parent.id, 0)
    assert child["kwargs"] == {"rows": [1, 2]}
    assert child["error"]["type"] == "InvalidArguments"
    assert "'rows'" in child["error"]["message"]
    with pytest.raises(TaskFailed) as failed:
        await client.result(child["id"], timeout=TIMEOUT)
    assert failed.value.type == "InvalidArguments"

    job_failed = await asyncio.wait_for(handled, TIMEOUT)
    assert (job_failed["job_id"], job_failed["error_type"]) == (child["id"], "InvalidArguments")
    assert await client.result(child["on_failure_job"], timeout=TIMEOUT) == "notified"
    assert ran == []


# ---------------------------------------------------------------------------- cron


def test_scheduled_task_whose_default_args_do_not_bind_is_rejected_at_decoration() -> None:
    """schedule= with default_args that do not bind (or none, for a task with parameters)
    raises ConfigurationError when the task is decorated."""
    worker = EasyJobsWorker(None, None, "127.0.0.1", 1, SECRET, "ETL")
    every_minute = "* * * * *"
    for default_args in ({"kwargs": {"link": ["http://stats"]}}, None):
        with pytest.raises(ConfigurationError, match="default_args of scheduled task extract"):

            @worker.task(schedule=every_minute, default_args=default_args)
            async def extract(url: str) -> None: ...


def serve_tick(worker: EasyJobsWorker, runs: list[tuple[str, Any]], warmed: set[str]) -> None:
    @worker.task()
    async def warm_up() -> None:
        warmed.add(current_job.get() or "")

    @worker.task(schedule="* * * * * *", default_args={"kwargs": {"url": ["http://stats"]}},
                 run_before=["warm_up"])
    async def tick(url: list[str]) -> str:
        runs.append((worker.name, url))
        return worker.name


def assert_one_job_per_tick(jobs: list[dict[str, Any]]) -> list[int]:
    """Scheduled jobs are created within milliseconds of their tick: one per second, at most."""
    ticks = sorted(round(job["created_at"]) for job in jobs)
    assert all(abs(job["created_at"] - round(job["created_at"])) < 0.3 for job in jobs), jobs
    assert len(ticks) == len(set(ticks)), ticks
    return ticks


async def test_two_workers_advertising_a_schedule_get_one_job_per_tick_across_a_restart(
    manager: RunningManager, manager_factory: Callable[..., Any],
    worker_factory: WorkerFactory, client_factory: ClientFactory,
) -> None:
    """A seconds cron advertised by two workers fires once per tick, with its default_args,
    none skipped while up and none twice, also across a manager restart; each fire runs its
    run_before dependency first."""
    runs: list[tuple[str, Any]] = []
    warmed: set[str] = set()
    for name in ("w1", "w2"):
        worker = worker_factory(name=name)
        serve_tick(worker, runs, warmed)
        await worker.start()
    await wait_until(lambda: serving(manager, "tick", "w1") and serving(manager, "tick", "w2"),
                     what="both workers to advertise tick")
    client: EasyJobsClient = await client_factory()
    await wait_until(lambda: len(runs) >= 3, what="three ticks")
    before = assert_one_job_per_tick(await records(client, task="tick"))
    # While up, no tick is skipped: consecutive seconds.
    assert before == list(range(before[0], before[0] + len(before))), before

    await manager.stop()
    await manager_factory(db=manager.db, port=manager.port, retry_base=RETRY_BASE)
    count = len(runs)
    await wait_until(lambda: len(runs) >= count + 2, what="two ticks after the restart")
    jobs = await records(client, task="tick")
    ticks = assert_one_job_per_tick(jobs)
    assert ticks[: len(before)] == before
    after = ticks[len(before):]
    assert after and after == list(range(after[0], after[0] + len(after))), ticks
    assert {tuple(job["args"]) for job in jobs} == {()}
    assert {json.dumps(job["kwargs"]) for job in jobs} == {'{"url": ["http://stats"]}'}
    assert all(url == ["http://stats"] for _, url in runs), runs
    assert {name for name, _ in runs} <= {"w1", "w2"}
    assert all(job["parent"] is None for job in jobs)
    for job in jobs:
        if job["status"] == "succeeded":
            (dep,) = job["dependencies"]
            assert dep in warmed  # it ran, and before the tick's job (which waited for it)
            assert (await client.job(dep))["parent"] == job["id"]

    (entry,) = await client.schedules()
    assert (entry["queue"], entry["task"], entry["schedule"], entry["timezone"]) == (
        "ETL", "tick", "* * * * * *", "UTC")
    assert entry["next_fire"] == entry["last_fire"] + 1
    assert -0.5 < entry["next_fire"] - time.time() <= 1.0


async def test_schedules_show_the_next_fire_time_in_the_client_and_the_cli(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """client.schedules() and `easyjobs schedules` list each schedule with its next fire time
    (in its timezone, UTC by default)."""
    worker = worker_factory()

    # Yearly: neither fires while the test runs.
    @worker.task(schedule="0 9 1 1 *", timezone="Europe/Paris")
    async def new_year_report() -> None: ...

    @worker.task(schedule="0 9 1 1 *", default_args={"args": [1]})
    async def new_year_utc(n: int) -> None: ...

    await worker.start()
    await registered(manager, "ETL", "new_year_report", "new_year_utc")
    now = time.time()
    entries = {e["task"]: e for e in await client.schedules()}
    assert set(entries) == {"new_year_report", "new_year_utc"}
    assert entries["new_year_report"]["timezone"] == "Europe/Paris"
    assert entries["new_year_report"]["next_fire"] == next_tick("0 9 1 1 *", "Europe/Paris", now)
    assert entries["new_year_utc"]["timezone"] == "UTC"
    assert entries["new_year_utc"]["next_fire"] == next_tick("0 9 1 1 *", None, now)
    # 09:00 in Paris on 1 January is 08:00 UTC.
    assert entries["new_year_utc"]["next_fire"] - entries["new_year_report"]["next_fire"] == 3600
    assert entries["new_year_utc"]["last_fire"] is None

    ran = await run_cli("schedules", "--port", str(manager.port), "--json")
    assert ran.code == 0, ran.err
    printed = {e["task"]: e for e in map(json.loads, ran.out.splitlines())}
    assert printed == entries


# ---------------------------------------------------------------------------- easyjobs jobs


def table_rows(out: str) -> dict[str, list[str]]:
    """`easyjobs jobs` output as {job id: [queue, task, status, attempts, *links]}."""
    header, *lines = out.splitlines()
    assert header.split()[:6] == ["id", "queue", "task", "status", "att", "links"]
    return {parts[0]: parts[1:] for parts in (line.split() for line in lines)}


async def test_jobs_command_lists_recent_jobs_with_links_and_filters(
    manager: RunningManager, worker_factory: WorkerFactory, client: EasyJobsClient
) -> None:
    """`easyjobs jobs` shows status, attempts and workflow links; --queue, --task and --status
    filter."""
    worker = worker_factory()
    other = worker_factory("OTHER")

    @worker.task(run_after=["child"])
    async def parent() -> int:
        return 1

    @worker.task()
    async def child(n: int) -> int:
        return n

    @worker.task(on_failure="handler", retry_policy="never")
    async def broken() -> None:
        raise RuntimeError("broken")

    @worker.task()
    async def handler(job_failed: dict[str, Any]) -> None: ...

    @worker.task(run_before=["child_dep"])
    async def waits() -> None: ...

    @worker.task()
    async def child_dep() -> None: ...

    @other.task()
    async def elsewhere() -> None: ...

    await worker.start()
    await other.start()
    jobs = {"parent": await parent.submit(), "broken": await broken.submit(),
            "waits": await waits.submit(), "elsewhere": await elsewhere.submit()}
    for name, job in jobs.items():
        if name == "broken":
            with pytest.raises(TaskFailed):
                await job.result(timeout=TIMEOUT)
        else:
            await job.result(timeout=TIMEOUT)
    listed = {r["task"]: r for r in await records(client)}
    for task in ("child", "handler"):
        await client.result(listed[task]["id"], timeout=TIMEOUT)
    listed = {r["task"]: r for r in await records(client)}
    assert len(listed) == 7

    port = ["--port", str(manager.port)]
    everything, etl, only_child, failed, limited = await asyncio.gather(
        run_cli("jobs", *port),
        run_cli("jobs", *port, "--queue", "ETL"),
        run_cli("jobs", *port, "--task", "child"),
        run_cli("jobs", *port, "--status", "failed"),
        run_cli("jobs", *port, "--limit", "2", "--json"),
    )
    for ran in (everything, etl, only_child, failed, limited):
        assert ran.code == 0, ran.err

    rows = table_rows(everything.out)
    assert set(rows) == {r["id"] for r in listed.values()}
    ids = {task: r["id"] for task, r in listed.items()}
    assert rows[ids["parent"]] == ["ETL", "parent", "succeeded", "1"]
    assert rows[ids["child"]] == ["ETL", "child", "succeeded", "1", f"parent={ids['parent']}"]
    assert rows[ids["broken"]] == ["ETL", "broken", "failed", "1", f"on_failure={ids['handler']}"]
    assert rows[ids["handler"]] == ["ETL", "handler", "succeeded", "1",
                                    f"parent={ids['broken']}", f"handles={ids['broken']}"]
    assert rows[ids["waits"]] == ["ETL", "waits", "succeeded", "1", f"deps={ids['child_dep']}"]
    assert rows[ids["child_dep"]] == ["ETL", "child_dep", "succeeded", "1",
                                      f"parent={ids['waits']}"]
    assert rows[ids["elsewhere"]] == ["OTHER", "elsewhere", "succeeded", "1"]
    # Newest first.
    newest_first = sorted(listed.values(), key=lambda r: (r["created_at"], r["id"]), reverse=True)
    assert list(rows) == [r["id"] for r in newest_first]

    assert set(table_rows(etl.out)) == {i for t, i in ids.items() if t != "elsewhere"}
    assert set(table_rows(only_child.out)) == {ids["child"]}
    assert set(table_rows(failed.out)) == {ids["broken"]}
    assert [json.loads(line)["id"] for line in limited.out.splitlines()] == [
        r["id"] for r in newest_first[:2]]


# ---------------------------------------------------------------------------- restarts


async def test_manager_restart_resumes_a_retry_backoff_and_a_waiting_job(
    manager_factory: Callable[..., Any], worker_factory: WorkerFactory,
    client_factory: ClientFactory, tmp_path: Path,
) -> None:
    """Stopped while a job waits for its retry and another for its run_before dependency, a
    restarted manager keeps the retry's due time and releases the waiting job: each runs once
    more or once, and both complete."""
    db = tmp_path / "restart.db"
    first = await manager_factory(db=db, retry_base=1.0)  # the retry waits 0.5-1 s
    worker = worker_factory(port=first.port, name="w")
    client: EasyJobsClient = await client_factory(port=first.port)
    attempts_at: list[float] = []
    runs: Counter[str] = Counter()
    dep_started, dep_gate = asyncio.Event(), asyncio.Event()

    @worker.task()
    async def flaky() -> str:
        runs["flaky"] += 1
        attempts_at.append(time.time())
        if len(attempts_at) == 1:
            raise RuntimeError("first attempt fails")
        return "second attempt"

    @worker.task()
    async def prepare_db() -> str:
        runs["prepare_db"] += 1
        dep_started.set()
        await dep_gate.wait()
        return "prepared"

    @worker.task(run_before=["prepare_db"])
    async def configure_environment() -> str:
        runs["configure_environment"] += 1
        return "configured"

    await worker.start()
    retried = await client.submit("ETL", "flaky")
    waiting = await client.submit("ETL", "configure_environment")
    await asyncio.wait_for(dep_started.wait(), TIMEOUT)

    async def retrying() -> bool:
        return (await client.job(retried.id))["status"] == "retrying"

    await wait_until(retrying, what="the first attempt to fail")
    await first.stop()

    row = stored_job(db, retried.id)
    assert row is not None and (row["status"], row["attempts"]) == ("retrying", 1)
    assert unpack(row["error"])["message"] == "first attempt fails"
    due = row["next_attempt_at"]
    assert due > attempts_at[0]
    wrow = stored_job(db, waiting.id)
    assert wrow is not None and wrow["status"] == "waiting"
    (dep_id,) = unpack(wrow["dependencies"])
    drow = stored_job(db, dep_id)
    # A stopping manager requeues what its departing workers were running.
    assert drow is not None and drow["status"] == "queued"

    await manager_factory(db=db, port=first.port, retry_base=1.0)
    assert await retried.result(timeout=TIMEOUT) == "second attempt"
    # The second attempt waited for the stored due time (not run at once, not re-planned).
    assert attempts_at[1] >= due - 0.01

    async def dependency_resumed() -> bool:  # the worker kept running it across the restart
        return (await client.job(dep_id))["status"] == "running"

    await wait_until(dependency_resumed, what="the worker to resume prepare_db")
    assert (await client.job(waiting.id))["status"] == "waiting"
    dep_gate.set()
    assert await waiting.result(timeout=TIMEOUT) == "configured"
    assert runs == Counter({"flaky": 2, "prepare_db": 1, "configure_environment": 1})
    info = await client.job(waiting.id)
    assert (info["status"], info["attempts"], info["dependencies"]) == ("succeeded", 1, [dep_id])
    assert (await client.job(dep_id))["attempts"] == 1


@pytest.mark.parametrize("kill_during", ["transform", "deploy_environment+prepare_db"])
async def test_manager_killed_mid_chain_and_restarted_runs_every_step_exactly_once(
    kill_during: str, process_factory: Callable[..., Process], worker_factory: WorkerFactory,
    client_factory: ClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGKILL of a manager process while the ETL chain runs (a step running, the rest of the
    chain waiting); restarted on the same database, the chain completes, every step once.

    ``transform``: the step still runs when the new manager comes up; the worker resumes it.
    ``deploy_environment+prepare_db``: both finish while no manager is up (configure_environment
    and compute wait in the store); the worker delivers their outcomes on reconnecting.
    """
    caplog.set_level(logging.INFO, logger="easyjobs.link")
    port, db = free_port(), tmp_path / "crash.db"
    first = spawn_manager(process_factory, port, db)
    await wait_listening(first, port)
    gated = tuple(kill_during.split("+"))
    trace = Trace(gated)
    worker = worker_factory(port=port, name="etl", max_tasks=5)
    tasks = seed_etl(worker, trace)
    await worker.start()
    extract = await tasks["extract"].submit(url="http://stats")  # over the worker's own link
    for task in gated:
        await asyncio.wait_for(trace.started[task].wait(), TIMEOUT)

    first.popen.send_signal(signal.SIGKILL)
    assert first.popen.wait(TIMEOUT) == -signal.SIGKILL
    if kill_during != "transform":
        # Only the worker's link is connected: once it logs the lost manager, it no longer
        # counts as open, and outcomes wait in the worker for the next connection.
        await wait_until(lambda: any("manager unreachable" in r.getMessage()
                                     for r in caplog.records), what="the worker to notice")
        for task in gated:
            trace.gates[task].set()
        for task in gated:
            await asyncio.wait_for(trace.ended[task].wait(), TIMEOUT)

    second = spawn_manager(process_factory, port, db)
    await wait_listening(second, port)
    client: EasyJobsClient = await client_factory(port=port)
    if kill_during == "transform":
        (transform,) = await records(client, task="transform")

        async def resumed() -> bool:  # requeued at start-up, then claimed by the worker
            return (await client.job(transform["id"]))["status"] == "running"

        await wait_until(resumed, what="the worker to resume transform")
        trace.gates["transform"].set()

    await asyncio.wait_for(trace.ended["compute"].wait(), TIMEOUT)
    compute = by_task(await records(client, task="compute"))["compute"]
    assert await client.result(compute["id"], timeout=TIMEOUT) == {
        "computed": {"a": 3, "b": 4, "c": 5}}
    assert await client.result(extract.id, timeout=TIMEOUT) == {"data": SEED_DATA}

    assert trace.runs == Counter({name: 1 for name in ETL_TASKS})
    jobs = by_task(await records(client))  # each step's job exists exactly once
    assert set(jobs) == set(ETL_TASKS)
    assert_etl_links(jobs, extract.id)
    assert {(j["status"], j["attempts"]) for j in jobs.values()} == {("succeeded", 1)}
    assert trace.arguments["load"] == trace.arguments["compute"] == {"a": 3, "b": 4, "c": 5}
