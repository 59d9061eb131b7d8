"""The pure workflow rules (``easyjobs.manager.workflow``), run_before cycle detection and the
cron clock, tested directly with tables of task specs: no manager, no I/O."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from easyjobs.errors import ConfigurationError, InvalidArguments, UnknownTask
from easyjobs.jobs import JobRecord, JobStatus, new_job_id
from easyjobs.manager.scheduler import next_tick
from easyjobs.manager.workflow import dependency_jobs as _dependency_jobs
from easyjobs.manager.workflow import (
    describe_failure,
    failure_jobs,
    retry_delay,
    run_after_jobs,
)
from easyjobs.tasks import (
    RETRY_POLICIES,
    Param,
    TaskSpec,
    find_cycle,
    make_options,
    spec_for,
)

Q = "ETL"
NOW = 1_700_000_000.0


def p(name: str, kind: str = "positional_or_keyword", default: bool = False) -> Param:
    return Param(name, kind, default)


def spec(name: str, *params: Param, queue: str = Q, **options: Any) -> TaskSpec:
    return TaskSpec(name, queue, params, make_options(**options))


class Table:
    """A lookup over a fixed set of specs, as the core's ``_spec``."""

    def __init__(self, *specs: TaskSpec) -> None:
        self.specs = {(s.queue, s.name): s for s in specs}

    def __call__(self, queue: str, task: str) -> TaskSpec | None:
        return self.specs.get((queue, task))


def job(task: str, *args: Any, queue: str = Q, **kwargs: Any) -> JobRecord:
    return JobRecord(id=new_job_id(), queue=queue, task=task, args=list(args), kwargs=kwargs,
                     created_at=NOW)


def dependency_jobs(lookup: Table, record: JobRecord) -> list[JobRecord]:
    return _dependency_jobs(lookup, record, NOW)


# The seed's ETL flow (tasks.md), as specs.
ETL = Table(
    spec("extract", p("url"), run_after=["transform"]),
    spec("transform", p("data"), run_after=["load"]),
    spec("load", p("data"), on_failure="failure_notify", run_after=["compute"]),
    spec("failure_notify", p("job_failed")),
    spec("deploy_environment"),
    spec("prepare_db"),
    spec("configure_environment", run_before=["deploy_environment", "prepare_db"]),
    spec("compute", p("data"), run_before=["configure_environment"]),
    spec("echo", p("value", "var_positional")),
)


# ------------------------------------------------------------------ run_after


@pytest.mark.parametrize(
    ("result", "args", "kwargs"),
    [
        ({"data": {"a": 1}}, [], {"data": {"a": 1}}),  # the seed's `return {'data': data}`
        ({"data": 3}, [], {"data": 3}),
        ([1, 2], [[1, 2]], {}),
        ("text", ["text"], {}),
        (None, [None], {}),
        ({1: "non-str key"}, [{1: "non-str key"}], {}),  # not kwargs: a single positional
    ],
)
def test_run_after_result_becomes_the_childs_arguments(
    result: Any, args: list[Any], kwargs: dict[str, Any]
) -> None:
    """A dict result (str keys) becomes keyword arguments; anything else one positional one."""
    table = Table(spec("parent", run_after=["child"]),
                  spec("child", p("data", "var_positional"), p("kw", "var_keyword")))
    parent = job("parent")
    (child,) = run_after_jobs(table, parent, result, NOW)
    assert (child.task, child.queue, child.parent) == ("child", Q, parent.id)
    assert (child.args, child.kwargs) == (args, kwargs)
    assert (child.status, child.created_at, child.error) == (JobStatus.QUEUED, NOW, None)


def test_run_after_creates_one_child_per_listed_task_each_with_its_own_arguments() -> None:
    """Two run_after tasks get two independent jobs (mutating one's arguments spares the other)."""
    table = Table(spec("parent", run_after=["a", "b"]), spec("a", p("data")), spec("b", p("data")))
    a, b = run_after_jobs(table, job("parent"), {"data": [1]}, NOW)
    assert (a.task, b.task) == ("a", "b") and a.id != b.id
    a.kwargs["data"] = "changed"
    assert b.kwargs == {"data": [1]}


def test_run_after_of_a_task_without_run_after_or_unknown_creates_nothing() -> None:
    """No run_after option, or a parent whose spec is unknown: no children."""
    assert run_after_jobs(ETL, job("deploy_environment"), "done", NOW) == []
    assert run_after_jobs(ETL, job("nobody"), "done", NOW) == []


def test_unbindable_child_is_created_failed_with_its_failure_handler() -> None:
    """A child whose arguments do not bind is created failed (InvalidArguments) + its on_failure."""
    transform = job("transform", data={"a": 1})
    children = run_after_jobs(ETL, transform, {"wrong": 1}, NOW)
    load, handler = children
    assert load.task == "load" and load.parent == transform.id
    assert (load.status, load.finished_at) == (JobStatus.FAILED, NOW)
    assert load.error is not None and load.error["type"] == "InvalidArguments"
    assert "load()" in load.error["message"] and "'wrong'" in load.error["message"]
    assert handler.task == "failure_notify" and handler.status is JobStatus.QUEUED
    assert (handler.parent, handler.handler_for, load.on_failure_job) == (
        load.id, load.id, handler.id)
    failed = handler.kwargs["job_failed"]
    assert (failed["job_id"], failed["task"], failed["kwargs"]) == (load.id, "load", {"wrong": 1})
    assert failed["error_type"] == "InvalidArguments" and failed["attempts"] == 0


def test_unknown_run_after_task_is_created_failed() -> None:
    """A run_after task nobody registered yields a failed child naming it (UnknownTask)."""
    table = Table(spec("parent", run_after=["ghost"]))
    (child,) = run_after_jobs(table, job("parent"), 1, NOW)
    assert child.status is JobStatus.FAILED and child.task == "ghost"
    assert child.error is not None and child.error["type"] == "UnknownTask"
    assert "ghost" in child.error["message"]


def test_run_after_child_with_run_before_waits_for_its_dependencies() -> None:
    """load -> compute: compute is created waiting with configure_environment (and its deps)."""
    load = job("load", data={"a": 3})
    created = run_after_jobs(ETL, load, {"data": {"a": 3}}, NOW)
    by_task = {r.task: r for r in created}
    assert [r.task for r in created] == [
        "compute", "configure_environment", "deploy_environment", "prepare_db"]
    compute, configure = by_task["compute"], by_task["configure_environment"]
    assert compute.status is JobStatus.WAITING and compute.parent == load.id
    assert compute.kwargs == {"data": {"a": 3}}
    assert compute.dependencies == [configure.id]
    assert configure.status is JobStatus.WAITING and configure.parent == compute.id
    assert configure.dependencies == [by_task["deploy_environment"].id, by_task["prepare_db"].id]


# ------------------------------------------------------------------ run_before


def test_run_before_is_recursive_and_dependencies_run_with_no_arguments() -> None:
    """compute -> configure_environment -> (deploy_environment, prepare_db), each its own job."""
    compute = job("compute", data={"x": 1})
    deps = dependency_jobs(ETL, compute)
    configure, deploy, prepare = deps
    assert [d.task for d in deps] == ["configure_environment", "deploy_environment", "prepare_db"]
    assert compute.status is JobStatus.WAITING and compute.dependencies == [configure.id]
    assert configure.status is JobStatus.WAITING
    assert configure.dependencies == [deploy.id, prepare.id]
    for dep, parent in ((configure, compute), (deploy, configure), (prepare, configure)):
        assert (dep.parent, dep.queue, dep.args, dep.kwargs) == (parent.id, Q, [], {})
    assert deploy.status is prepare.status is JobStatus.QUEUED
    assert deploy.dependencies == [] and prepare.dependencies == []


def test_a_job_without_run_before_stays_queued() -> None:
    """No dependencies: nothing is created and the job is not made to wait."""
    record = job("deploy_environment")
    assert dependency_jobs(ETL, record) == []
    assert record.status is JobStatus.QUEUED and record.dependencies == []


def test_dependencies_get_their_default_args() -> None:
    """A dependency with default_args runs with them (args and kwargs)."""
    table = Table(spec("main", run_before=["fetch"]),
                  spec("fetch", p("a"), p("url"),
                       default_args={"args": [1], "kwargs": {"url": "http://stats"}}))
    (fetch,) = dependency_jobs(table, job("main"))
    assert (fetch.args, fetch.kwargs) == ([1], {"url": "http://stats"})


def test_unknown_dependency_is_refused() -> None:
    """A run_before task nobody registered: UnknownTask naming it; nothing is created."""
    table = Table(spec("main", run_before=["ghost"]))
    record = job("main")
    with pytest.raises(UnknownTask, match="ghost"):
        dependency_jobs(table, record)


def test_dependency_that_needs_arguments_is_refused() -> None:
    """A dependency whose (missing) default_args do not bind: InvalidArguments naming it."""
    table = Table(spec("main", run_before=["fetch"]), spec("fetch", p("url")))
    with pytest.raises(InvalidArguments, match="dependency fetch of main.*'url'"):
        dependency_jobs(table, job("main"))


def test_dependency_cycle_is_refused_when_creating_jobs() -> None:
    """Should a cycle get past registration, creating the jobs names it instead of recursing."""
    table = Table(spec("a", run_before=["b"]), spec("b", run_before=["a"]))
    with pytest.raises(ConfigurationError, match="cycle: a -> b -> a"):
        dependency_jobs(table, job("a"))


@pytest.mark.parametrize(
    ("specs", "cycle"),
    [
        ([spec("a", run_before=["b"]), spec("b")], None),
        ([spec("a", run_before=["b", "c"]), spec("b", run_before=["c"]), spec("c")], None),
        ([spec("a", run_before=["a"])], ["a", "a"]),
        ([spec("a", run_before=["b"]), spec("b", run_before=["a"])], ["a", "b", "a"]),
        ([spec("x", run_before=["a"]), spec("a", run_before=["b"]),
          spec("b", run_before=["c"]), spec("c", run_before=["a"])], ["a", "b", "c", "a"]),
        ([spec("a", run_before=["ghost"])], None),  # unknown: not a cycle (refused at submit)
        # the same names in another queue are other tasks
        ([spec("a", run_before=["b"]), spec("b", run_before=["a"], queue="OTHER")], None),
    ],
)
def test_find_cycle(specs: list[TaskSpec], cycle: list[str] | None) -> None:
    """find_cycle returns the cycle as task names (first task repeated at the end), or None."""
    assert find_cycle({(s.queue, s.name): s for s in specs}) == cycle


def test_find_cycle_on_the_seed_flow_finds_none() -> None:
    """The seed's recursive run_before (compute -> configure -> deploy, prepare) is acyclic."""
    assert find_cycle(ETL.specs) is None


# ------------------------------------------------------------------ on_failure


def failed_job(task: str, attempts: int = 2, **kwargs: Any) -> JobRecord:
    record = job(task, 7, **kwargs)
    record.attempts, record.status = attempts, JobStatus.FAILED
    record.error = {"type": "ValueError", "message": "bad row", "traceback": "Traceback ..."}
    return record


def test_describe_failure_shape() -> None:
    """job_failed holds exactly: job id, queue, task, arguments, error type/message/traceback,
    attempts."""
    record = failed_job("load", data={"a": 1})
    assert describe_failure(record) == {
        "job_id": record.id,
        "queue": Q,
        "task": "load",
        "args": [7],
        "kwargs": {"data": {"a": 1}},
        "error_type": "ValueError",
        "message": "bad row",
        "traceback": "Traceback ...",
        "attempts": 2,
    }


def test_describe_failure_without_an_error_has_empty_strings() -> None:
    """A record without an error map still gives every key (empty strings)."""
    described = describe_failure(job("load"))
    assert (described["error_type"], described["message"], described["traceback"]) == ("", "", "")


def test_failure_creates_the_handler_job_with_job_failed() -> None:
    """A failed job whose task has on_failure creates one handler job, linked both ways."""
    load = failed_job("load", data={"a": 1})
    (handler,) = failure_jobs(ETL, load, NOW)
    assert (handler.task, handler.queue, handler.status) == ("failure_notify", Q, JobStatus.QUEUED)
    assert handler.kwargs == {"job_failed": describe_failure(load)} and handler.args == []
    assert (handler.parent, handler.handler_for, load.on_failure_job) == (
        load.id, load.id, handler.id)


def test_failure_handler_never_gets_a_handler_of_its_own() -> None:
    """A handler job's failure creates nothing, even when its task names itself as on_failure."""
    table = Table(spec("notify", p("job_failed"), on_failure="notify"))
    handler = failed_job("notify", job_failed={})
    handler.handler_for = new_job_id()
    assert failure_jobs(table, handler, NOW) == []
    assert handler.on_failure_job is None
    # The same task submitted directly (not as a handler) does get one.
    direct = failed_job("notify", job_failed={})
    assert [h.task for h in failure_jobs(table, direct, NOW)] == ["notify"]


def test_no_handler_without_on_failure_or_for_an_unknown_handler_task() -> None:
    """No on_failure option, or a handler task nobody registered: nothing is created."""
    assert failure_jobs(ETL, failed_job("transform"), NOW) == []
    table = Table(spec("load", on_failure="ghost"))
    assert failure_jobs(table, failed_job("load"), NOW) == []


# ------------------------------------------------------------------ retries


@pytest.mark.parametrize(
    ("policy", "attempts", "retries"),
    [
        ("never", 1, False),
        ("retry_once", 1, True),
        ("retry_once", 2, False),
        ("retry_always", 1, True),
        ("retry_always", 2, True),
        ("retry_always", 50, True),
        ("always", 50, True),  # the seed's spelling, as accepted by the decorator
    ],
)
def test_retry_policy_decides_whether_another_attempt_comes(
    policy: str, attempts: int, retries: bool
) -> None:
    """never = one attempt, retry_once = two, retry_always (or `always`) = unbounded."""
    canonical = make_options(retry_policy=policy).retry_policy
    assert canonical == RETRY_POLICIES[policy]
    delay = retry_delay(canonical, attempts, base=1.0, cap=60.0)
    assert (delay is not None) is retries


def test_retry_policy_spellings() -> None:
    """`always` and `retry_always` are the same policy; an unknown one fails at decoration."""
    assert make_options(retry_policy="always").retry_policy == "retry_always"
    assert make_options(retry_policy=None).retry_policy == "retry_once"
    with pytest.raises(ConfigurationError, match="retry_policy"):
        make_options(retry_policy="sometimes")


@pytest.mark.parametrize(
    ("attempts", "low", "high"),
    [(1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (6, 16.0, 32.0), (7, 30.0, 60.0),
     (40, 30.0, 60.0)],
)
def test_retry_delay_backs_off_exponentially_with_jitter_under_a_cap(
    attempts: int, low: float, high: float
) -> None:
    """Attempt n waits min(cap, base * 2**(n-1)) scaled by [0.5, 1): jitter bounds, then cap."""
    assert retry_delay("retry_always", attempts, 1.0, 60.0, jitter=lambda: 0.0) == low
    assert retry_delay("retry_always", attempts, 1.0, 60.0, jitter=lambda: 1.0) == high
    for _ in range(50):
        delay = retry_delay("retry_always", attempts, 1.0, 60.0)
        assert delay is not None and low <= delay <= high


@pytest.mark.parametrize("attempts", [1024, 1025, 5000, 10**9])
def test_retry_delay_stays_at_the_cap_for_any_number_of_attempts(attempts: int) -> None:
    """A retry_always job retried for days (thousands of attempts) still gets the capped delay."""
    assert retry_delay("retry_always", attempts, 1.0, 60.0, jitter=lambda: 1.0) == 60.0
    assert retry_delay("retry_always", attempts, 1.0, 60.0, jitter=lambda: 0.0) == 30.0


def test_retry_delays_grow_from_attempt_to_attempt_whatever_the_jitter() -> None:
    """The longest delay of attempt n is never above the shortest of attempt n+1 (below the cap)."""
    for attempts in range(1, 6):
        longest = retry_delay("retry_always", attempts, 0.02, 60.0, jitter=lambda: 1.0)
        shortest = retry_delay("retry_always", attempts + 1, 0.02, 60.0, jitter=lambda: 0.0)
        assert longest is not None and shortest is not None and longest <= shortest


# ------------------------------------------------------------------ scheduling


def utc(*fields: int) -> float:
    return datetime(*fields, tzinfo=timezone.utc).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("schedule", "tz", "after", "expected"),
    [
        ("* * * * *", None, utc(2024, 1, 1, 0, 0, 30), utc(2024, 1, 1, 0, 1)),
        ("* * * * *", None, utc(2024, 1, 1, 0, 1), utc(2024, 1, 1, 0, 2)),  # strictly after
        ("0 9 * * *", None, utc(2024, 1, 1, 12, 0), utc(2024, 1, 2, 9, 0)),
        ("0 9 * * *", "UTC", utc(2024, 1, 1, 8, 0), utc(2024, 1, 1, 9, 0)),
        # 09:00 in Paris is 08:00 UTC in winter (CET) and 07:00 UTC in summer (CEST)
        ("0 9 * * *", "Europe/Paris", utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 8, 0)),
        ("0 9 * * *", "Europe/Paris", utc(2024, 7, 1, 0, 0), utc(2024, 7, 1, 7, 0)),
        ("0 0 * * *", "America/New_York", utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 5, 0)),
        # six fields: the last one is seconds
        ("* * * * * *", None, utc(2024, 1, 1, 0, 0, 0) + 0.25, utc(2024, 1, 1, 0, 0, 1)),
        ("* * * * * *", None, utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 1, 0, 0, 2)),
        ("* * * * * */5", None, utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 1, 0, 0, 5)),
        ("30 * * * * 10", None, utc(2024, 1, 1, 0, 0, 0), utc(2024, 1, 1, 0, 30, 10)),
    ],
)
def test_next_tick(schedule: str, tz: str | None, after: float, expected: float) -> None:
    """The first tick strictly after `after`, in UTC unless a timezone is given."""
    assert next_tick(schedule, tz, after) == expected


def test_bad_schedule_and_timezone_fail_at_decoration() -> None:
    """An invalid cron expression or an unknown timezone is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="cron"):
        make_options(schedule="every minute")
    with pytest.raises(ConfigurationError, match="timezone"):
        make_options(schedule="* * * * *", timezone="Mars/Olympus")


async def _extract(url: str) -> None:
    return None


@pytest.mark.parametrize(
    "default_args",
    [None, {}, {"args": [1, 2]}, {"kwargs": {"link": "x"}},
     {"args": ["a"], "kwargs": {"url": "b"}}],
)
def test_scheduled_default_args_must_bind(default_args: dict[str, Any] | None) -> None:
    """A scheduled task whose default_args do not bind is rejected when it is decorated."""
    options = make_options(schedule="* * * * *", default_args=default_args)
    with pytest.raises(ConfigurationError, match="default_args of scheduled task _extract"):
        spec_for(_extract, Q, options)


def test_scheduled_default_args_that_bind_are_accepted() -> None:
    """The seed's extract schedule (kwargs only) binds."""
    options = make_options(schedule="* * * * *", default_args={"kwargs": {"url": ["http://s"]}})
    assert spec_for(_extract, Q, options).options.default_args == {
        "args": [], "kwargs": {"url": ["http://s"]}}
