"""The HTTP API against a real manager: auth, creating jobs from JSON, waiting on pushed results,
reading and steering jobs, workers and queues, and the live OpenAPI document."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from easyjobs import EasyJobsClient, EasyJobsWorker, InvalidArguments, JobStatus
from easyjobs.protocol.frames import Lookup, Submit, Watch

from ..conftest import RunningManager
from ..mesh import registered
from ..utils import SECRET, TIMEOUT, wait_until
from .conftest import API_TOKEN, base_url

WorkerFactory = Callable[..., EasyJobsWorker]


async def add(a: int, b: int = 2) -> int:
    return a + b


async def typed(n: int, s: str, flag: bool, items: list[int], table: dict[str, int],
                maybe: int | None = None) -> str:
    return f"{n}{s}{flag}{sum(items)}{sum(table.values())}{maybe}"


async def reverse(data: bytes) -> bytes:
    return data[::-1]


async def boom(message: str) -> None:
    raise ValueError(message)


async def cleanup(job_failed: dict[str, Any]) -> str:
    return str(job_failed["job_id"])


async def started(worker: EasyJobsWorker, manager: RunningManager,
                  *tasks: Callable[..., Any]) -> EasyJobsWorker:
    """Register ``tasks`` in ``worker``'s queue, start the worker, wait for the manager to know."""
    for fn in tasks:
        worker.task()(fn)
    await worker.start()
    await registered(manager, worker.queue, *(fn.__name__ for fn in tasks))
    return worker


async def finished(api: httpx.AsyncClient, job_id: str) -> httpx.Response:
    """The answer of ``GET /jobs/{id}/result`` once the job has finished."""
    response = await api.get(f"/jobs/{job_id}/result", params={"timeout": TIMEOUT})
    assert response.status_code != 202, response.text
    return response


def gated(worker: EasyJobsWorker) -> asyncio.Event:
    """Register ``ETL.hold(x)``: it returns ``x`` once the returned event is set."""
    gate = asyncio.Event()

    @worker.task()
    async def hold(x: int) -> int:
        await gate.wait()
        return x

    return gate


# ---------------------------------------------------------------------- auth

ROUTES = [
    ("GET", "/openapi.json"), ("GET", "/metrics"), ("GET", "/events"), ("GET", "/jobs"),
    ("GET", "/jobs/0123"), ("GET", "/jobs/0123/result"), ("POST", "/jobs/0123/cancel"),
    ("GET", "/workers"), ("POST", "/workers/pause"), ("POST", "/workers/resume"),
    ("GET", "/queues"), ("POST", "/ETL/task/add"),
]


async def test_every_route_but_healthz_needs_a_bearer_token(
    manager: RunningManager, anonymous: httpx.AsyncClient
) -> None:
    """Without a token, with a wrong one, another scheme, or the secret in the query: 401 JSON."""
    assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
    wrong = [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {SECRET}"},
             {"Authorization": "Bearer"}, {"Authorization": f"Bearer {SECRET}x"},
             {"Authorization": SECRET}]
    in_query = {"token": SECRET, "access_token": SECRET, "authorization": f"Bearer {SECRET}"}
    for method, path in ROUTES:
        for headers in wrong:
            response = await anonymous.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["error"]["type"] == "unauthorized"
        response = await anonymous.request(method, path, params=in_query)
        assert response.status_code == 401, (method, path, "query")
    assert manager.manager.core.active == {}  # nothing was created on the way


async def test_api_tokens_from_the_token_file_are_accepted(
    anonymous: httpx.AsyncClient
) -> None:
    """A token from --api-token-file works like the secret; its comment line is no token."""
    for token in (API_TOKEN, SECRET, f" {API_TOKEN}"):
        response = await anonymous.get("/workers", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, token
    for token in ("# one token per line", API_TOKEN.upper(), API_TOKEN[:-1]):
        response = await anonymous.get("/workers", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
    response = await anonymous.get("/workers", headers={"Authorization": f"bearer {API_TOKEN}"})
    assert response.status_code == 200  # the scheme is case-insensitive


async def test_metrics_need_a_token_unless_public(
    anonymous: httpx.AsyncClient, http_manager_factory: Callable[..., Any]
) -> None:
    """/metrics answers 401 without a token, unless the manager runs with metrics_public."""
    assert (await anonymous.get("/metrics")).status_code == 401
    ok = await anonymous.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")
    public = await http_manager_factory(metrics_public=True)
    async with httpx.AsyncClient(base_url=base_url(public), timeout=TIMEOUT) as other:
        assert (await other.get("/metrics")).status_code == 200
        assert (await other.get("/workers")).status_code == 401  # only /metrics opens up


# ---------------------------------------------------------------------- creating jobs

async def test_a_json_object_is_the_keyword_arguments(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """POST /{queue}/task/{task} with {"a": 1} answers 202 with the job id; the job runs."""
    await started(worker_factory(), manager, add)
    response = await api.post("/ETL/task/add", json={"a": 1})
    assert response.status_code == 202
    created = response.json()
    assert created["status"] == "queued" and len(created["job_id"]) == 32
    result = await finished(api, created["job_id"])
    assert result.status_code == 200
    assert result.json() == {"job_id": created["job_id"], "status": "succeeded", "result": 3}
    empty = await api.post("/ETL/task/add", content=b"")  # no body: no arguments
    assert empty.status_code == 422 and "missing 1 required argument: 'a'" in empty.text


async def test_args_and_kwargs_body(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """{"args": [...], "kwargs": {...}} binds positionally and by name."""
    await started(worker_factory(), manager, add)
    response = await api.post("/ETL/task/add", json={"args": [1], "kwargs": {"b": 5}})
    assert (await finished(api, response.json()["job_id"])).json()["result"] == 6
    response = await api.post("/ETL/task/add", json={"args": [4, 4]})
    assert (await finished(api, response.json()["job_id"])).json()["result"] == 8
    too_many = await api.post("/ETL/task/add", json={"args": [1, 2, 3]})
    assert too_many.status_code == 422
    assert "takes 2 positional arguments but 3 were given" in too_many.json()["error"]["message"]
    both = await api.post("/ETL/task/add", json={"args": [1], "kwargs": {"a": 2}})
    assert both.status_code == 422 and "multiple values for argument 'a'" in both.text
    shape = await api.post("/ETL/task/add", json={"args": {"a": 1}})
    assert shape.status_code == 422 and "args must be a list" in shape.text


async def test_wait_is_woken_by_the_pushed_result(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """?wait=30 answers 200 with the result as soon as it is pushed: one watch, no lookups."""
    worker = worker_factory()
    gate = gated(worker)
    await started(worker, manager)
    core = manager.manager.core
    asked: list[type] = []
    handle = core.handle

    def spy(peer: Any, frames: list[Any]) -> None:
        asked.extend(type(f) for f in frames if isinstance(f, (Submit, Watch, Lookup)))
        handle(peer, frames)

    monkeypatch.setattr(core, "handle", spy)
    request = asyncio.create_task(api.post("/ETL/task/hold?wait=30", json={"x": 7}))
    await wait_until(lambda: any(core.watchers.of(a.record.id)
                                 and a.record.status is JobStatus.RUNNING
                                 for a in core.active.values()), what="a watched running job")
    released = time.monotonic()
    gate.set()
    response = await request
    latency = time.monotonic() - released
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded" and response.json()["result"] == 7
    assert latency < 1.0, latency  # the push, not the 30 s deadline, ended the wait
    assert asked == [Submit, Watch]


async def test_wait_answers_202_when_the_job_is_not_done_in_time(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """?wait that runs out answers 202 with the current status; the job finishes later."""
    worker = worker_factory()
    gate = gated(worker)
    await started(worker, manager)
    t0 = time.monotonic()
    response = await api.post("/ETL/task/hold", params={"wait": 0.2}, json={"x": 1})
    assert time.monotonic() - t0 >= 0.2
    assert response.status_code == 202 and response.json()["status"] == "running"
    gate.set()
    assert (await finished(api, response.json()["job_id"])).json()["result"] == 1
    for bad in ("soon", "-1", "301", "nan"):
        response = await api.post("/ETL/task/hold", params={"wait": bad}, json={"x": 1})
        assert response.status_code == 400, bad


BAD_ARGUMENTS = [
    ({"s": "a", "flag": True, "items": [], "table": {}},
     "typed() missing 1 required argument: 'n'"),
    ({"s": "a", "flag": True, "items": []},
     "typed() missing 2 required arguments: 'n', 'table'"),
    ({"n": 1, "s": "a", "flag": True, "items": [], "table": {}, "zzz": 1},
     "typed() got an unexpected keyword argument 'zzz'"),
    ({"n": "1", "s": "a", "flag": True, "items": [], "table": {}},
     "argument 'n' must be an integer"),
    ({"n": True, "s": "a", "flag": True, "items": [], "table": {}},
     "argument 'n' must be an integer"),
    ({"n": 1.5, "s": "a", "flag": True, "items": [], "table": {}},
     "argument 'n' must be an integer"),
    ({"n": 1, "s": 2, "flag": True, "items": [], "table": {}},
     "argument 's' must be a string"),
    ({"n": 1, "s": "a", "flag": 1, "items": [], "table": {}},
     "argument 'flag' must be a boolean"),
    ({"n": 1, "s": "a", "flag": True, "items": [1, "2"], "table": {}},
     "argument 'items'[1] must be an integer"),
    ({"n": 1, "s": "a", "flag": True, "items": {}, "table": {}},
     "argument 'items' must be an array"),
    ({"n": 1, "s": "a", "flag": True, "items": [], "table": {"k": "v"}},
     "argument 'table'['k'] must be an integer"),
    ({"n": 1, "s": "a", "flag": True, "items": [], "table": [], "maybe": None},
     "argument 'table' must be an object"),
    ({"n": 1, "s": "a", "flag": True, "items": [], "table": {}, "maybe": "x"},
     "argument 'maybe' does not match any of the allowed types"),
    ({"args": ["1", "a", True, [], {}]}, "argument 'n' must be an integer"),
    ([1, 2], "the body must be a JSON object"),
    ("text", "the body must be a JSON object"),
]


async def test_arguments_that_do_not_bind_get_a_precise_422(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """Missing, unexpected and wrongly typed arguments are refused before queueing."""
    await started(worker_factory(), manager, typed)
    for body, message in BAD_ARGUMENTS:
        response = await api.post("/ETL/task/typed", json=body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["error"]
        assert message in error["message"], (body, error)
        assert error["type"] == "invalid_arguments"
    assert manager.manager.core.active == {}
    good = {"n": 1, "s": "a", "flag": False, "items": [1, 2], "table": {"k": 3}, "maybe": None}
    response = await api.post("/ETL/task/typed", params={"wait": TIMEOUT}, json=good)
    assert response.status_code == 200 and response.json()["result"] == "1aFalse33None"
    response = await api.post("/ETL/task/typed", params={"wait": TIMEOUT},
                              json={**good, "maybe": 4})
    assert response.json()["result"] == "1aFalse334"


async def test_python_refuses_what_http_refuses_in_the_same_words(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient,
    client: EasyJobsClient,
) -> None:
    """A call the HTTP API answers 422 raises InvalidArguments with the same message in Python."""
    await started(worker_factory(), manager, typed)
    compared = 0
    for body, _ in BAD_ARGUMENTS:
        if not isinstance(body, dict) or "args" in body:
            continue
        response = await api.post("/ETL/task/typed", json=body)
        with pytest.raises(InvalidArguments) as caught:
            await client.call("ETL", "typed", **body)
        assert str(caught.value) == response.json()["error"]["message"], body
        compared += 1
    assert compared == len(BAD_ARGUMENTS) - 3
    assert manager.manager.core.active == {}


async def test_unknown_task_too_large_and_invalid_json(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """404 for an unknown task, 413 over the body limit (declared or chunked), 400 bad JSON."""
    await started(worker_factory(), manager, add)
    for path in ("/ETL/task/nope", "/NOPE/task/add"):
        response = await api.post(path, json={"a": 1})
        assert response.status_code == 404 and response.json()["error"]["type"] == "unknown_task"
    big = b'{"a": "' + b"x" * (1 << 20) + b'"}'
    response = await api.post("/ETL/task/add", content=big)
    assert response.status_code == 413 and response.json()["error"]["type"] == "too_large"

    async def chunks() -> Any:
        yield b'{"a": "'
        for _ in range(20):
            yield b"x" * 65536

    response = await api.post("/ETL/task/add", content=chunks())
    assert response.status_code == 413
    for raw in (b"{", b'{"a": 1,}', b"\xff\xfe", b"NaN-ish", b'{"a": 1} x'):
        response = await api.post("/ETL/task/add", content=raw)
        assert response.status_code == 400, raw
        assert response.json()["error"]["type"] == "invalid_json"
    assert (await api.get("/healthz")).status_code == 200
    assert manager.manager.core.active == {}


async def test_bytes_travel_as_base64(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """Bytes arguments and results are {"$base64": ...}; invalid base64 is a 422."""
    await started(worker_factory(), manager, reverse)
    data = bytes(range(256))
    response = await api.post("/ETL/task/reverse", params={"wait": TIMEOUT},
                              json={"data": {"$base64": base64.b64encode(data).decode()}})
    assert response.status_code == 200
    assert base64.b64decode(response.json()["result"]["$base64"]) == data[::-1]
    record = (await api.get(f"/jobs/{response.json()['job_id']}")).json()
    assert record["kwargs"] == {"data": {"$base64": base64.b64encode(data).decode()}}
    bad = await api.post("/ETL/task/reverse", json={"data": {"$base64": "!!"}})
    assert bad.status_code == 422 and "base64" in bad.json()["error"]["message"]
    missing = await api.post("/ETL/task/reverse", json={"data": "abc"})
    assert missing.status_code == 422 and "argument 'data' must be bytes" in missing.text


async def test_non_finite_floats_are_tagged(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """A task returning NaN or infinity answers valid JSON: {"$float": "nan"}, both ways."""
    worker = worker_factory()

    @worker.task()
    async def scale(x: float, by: float) -> list[float]:
        return [x * by, -x * by, by - by]

    await started(worker, manager)
    response = await api.post("/ETL/task/scale", params={"wait": TIMEOUT},
                              json={"x": 1.0, "by": {"$float": "inf"}})
    assert response.status_code == 200
    assert response.json()["result"] == [{"$float": "inf"}, {"$float": "-inf"},
                                         {"$float": "nan"}]
    bad = await api.post("/ETL/task/scale", json={"x": 1, "by": {"$float": "big"}})
    assert bad.status_code == 422


# ---------------------------------------------------------------------- reading jobs

async def test_job_record_with_workflow_links(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """GET /jobs/{id}: status, attempts, timestamps, worker, outcome, parent and handler links."""
    worker = worker_factory(name="w-record")
    remote_add = worker.remote("ETL", "add")

    async def outer(x: int) -> int:
        return int(await remote_add(x, 1)) * 10

    worker.task(on_failure="cleanup", retry_policy="never")(boom)
    await started(worker, manager, add, outer, cleanup)
    response = await api.post("/ETL/task/outer", params={"wait": TIMEOUT}, json={"x": 2})
    assert response.json()["result"] == 30
    parent_id = response.json()["job_id"]
    parent = (await api.get(f"/jobs/{parent_id}")).json()
    assert parent["status"] == "succeeded" and parent["result"] == 30
    assert parent["attempts"] == 1 and parent["worker"] == "w-record"
    assert parent["created_at"] <= parent["started_at"] <= parent["finished_at"]
    assert parent["args"] == [] and parent["kwargs"] == {"x": 2}
    children = (await api.get("/jobs", params={"task": "add"})).json()["jobs"]
    assert [child["parent"] for child in children] == [parent_id]

    failed_id = (await api.post("/ETL/task/boom", json={"message": "bad"})).json()["job_id"]
    assert (await finished(api, failed_id)).status_code == 424
    failed = (await api.get(f"/jobs/{failed_id}")).json()
    assert failed["error"]["type"] == "ValueError" and failed["error"]["message"] == "bad"
    assert failed["on_failure_job"] is not None
    await finished(api, failed["on_failure_job"])
    handler = (await api.get(f"/jobs/{failed['on_failure_job']}")).json()
    assert handler["handler_for"] == failed_id and handler["task"] == "cleanup"
    assert (await api.get("/jobs/" + "f" * 32)).status_code == 404


async def test_result_statuses(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """/result: 200 succeeded, 202 still running, 424 failed with the error, 409 cancelled."""
    worker = worker_factory()
    gate = gated(worker)
    worker.task(retry_policy="never")(boom)
    await started(worker, manager)
    held = (await api.post("/ETL/task/hold", json={"x": 5})).json()["job_id"]
    running = await api.get(f"/jobs/{held}/result", params={"timeout": 0.05})
    assert running.status_code == 202 and running.json()["status"] == "running"
    assert (await api.get(f"/jobs/{held}/result")).status_code == 202  # default: no wait
    gate.set()
    done = await finished(api, held)
    assert done.status_code == 200 and done.json()["result"] == 5
    again = await api.get(f"/jobs/{held}/result")  # finished: answered from the store
    assert again.status_code == 200 and again.json()["result"] == 5

    failed_id = (await api.post("/ETL/task/boom", json={"message": "no"})).json()["job_id"]
    failed = await finished(api, failed_id)
    assert failed.status_code == 424
    error = failed.json()["error"]
    assert error["type"] == "ValueError" and error["message"] == "no"
    assert "Traceback" in error["traceback"] and "boom" in error["traceback"]

    gate.clear()
    cancelled_id = (await api.post("/ETL/task/hold", json={"x": 6})).json()["job_id"]
    assert (await api.post(f"/jobs/{cancelled_id}/cancel")).json()["status"] == "cancelled"
    cancelled = await finished(api, cancelled_id)
    assert cancelled.status_code == 409 and cancelled.json()["status"] == "cancelled"
    assert (await api.get("/jobs/" + "0" * 32 + "/result")).status_code == 404
    for bad in ("x", "-0.5", "1e9"):
        assert (await api.get(f"/jobs/{held}/result", params={"timeout": bad})).status_code == 400


async def test_cancel(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """POST /jobs/{id}/cancel stops a queued or running job; a finished job keeps its outcome."""
    worker = worker_factory(max_tasks=1)
    gate = gated(worker)
    await started(worker, manager)
    first = (await api.post("/ETL/task/hold", json={"x": 1})).json()["job_id"]
    second = (await api.post("/ETL/task/hold", json={"x": 2})).json()["job_id"]
    assert (await api.get(f"/jobs/{second}")).json()["status"] == "queued"
    record = (await api.post(f"/jobs/{second}/cancel")).json()
    assert record["id"] == second and record["status"] == "cancelled"
    record = (await api.post(f"/jobs/{first}/cancel")).json()
    assert record["status"] == "cancelled" and record["error"]["type"] == "JobCancelled"
    gate.set()
    third = (await api.post("/ETL/task/hold", params={"wait": TIMEOUT}, json={"x": 3})).json()
    assert third["result"] == 3  # the slot the cancelled job held was given back
    kept = (await api.post(f"/jobs/{third['job_id']}/cancel")).json()
    assert kept["status"] == "succeeded" and kept["result"] == 3
    assert (await api.post("/jobs/" + "0" * 32 + "/cancel")).status_code == 404


async def test_job_list_pages_newest_first_with_a_stable_cursor(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """Walking every page sees each job once, newest first, while new jobs keep arriving."""
    await started(worker_factory(), manager, add, reverse)
    ids = [(await api.post("/ETL/task/add", json={"a": i})).json()["job_id"] for i in range(23)]
    for job_id in ids:
        await finished(api, job_id)
    expected = sorted([(await api.get(f"/jobs/{i}")).json() for i in ids],
                      key=lambda job: (job["created_at"], job["id"]), reverse=True)
    walked: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5, "task": "add"}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await api.get("/jobs", params=params)).json()
        walked += [job["id"] for job in page["jobs"]]
        cursor, pages = page["next"], pages + 1
        await api.post("/ETL/task/add", json={"a": 100 + pages})  # newer than every cursor
        if cursor is None:
            break
    assert walked == [job["id"] for job in expected]
    assert pages == 5

    newest = (await api.get("/jobs", params={"limit": 1})).json()["jobs"][0]
    assert newest["kwargs"] == {"a": 105}
    await finished(api, newest["id"])
    assert len((await api.get("/jobs", params={"limit": 1000})).json()["jobs"]) == 28
    succeeded = (await api.get("/jobs", params={"status": "succeeded", "queue": "ETL",
                                                "limit": 1000})).json()["jobs"]
    assert {job["status"] for job in succeeded} == {"succeeded"} and len(succeeded) >= 24
    assert (await api.get("/jobs", params={"task": "reverse"})).json() == {"jobs": [],
                                                                         "next": None}
    assert (await api.get("/jobs", params={"queue": "OTHER"})).json()["jobs"] == []
    for bad in ({"status": "done"}, {"limit": 0}, {"limit": 1001}, {"limit": "ten"}):
        response = await api.get("/jobs", params=bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]["message"]


# ---------------------------------------------------------------------- workers and queues

async def test_workers_list(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """GET /workers: id, name, queues, tasks, in flight, capacity, connected since, heartbeat,
    and the manager it is connected to."""
    before = time.time()
    worker = worker_factory(name="w-list", max_tasks=3)
    gate = gated(worker)
    worker.task(namespace="OTHER")(reverse)
    await started(worker, manager, add)
    job_id = (await api.post("/ETL/task/hold", json={"x": 1})).json()["job_id"]
    await wait_until(lambda: any(w.in_flight for w in manager.manager.core.dispatcher.workers
                                 .values()), what="the job to be assigned")
    workers = {w["name"]: w for w in (await api.get("/workers")).json()["workers"]}
    entry = workers["w-list"]
    assert set(entry) == {"id", "name", "queues", "tasks", "in_flight", "capacity",
                          "connected_at", "last_heartbeat", "paused", "manager"}
    assert entry["manager"] == manager.manager.core.id
    assert entry["queues"] == ["ETL", "OTHER"]
    assert entry["tasks"] == ["ETL.add", "ETL.hold", "OTHER.reverse"]
    assert entry["in_flight"] == 1 and entry["capacity"] == 3 and entry["paused"] is False
    assert before <= entry["connected_at"] <= time.time()
    assert before - 1 <= entry["last_heartbeat"] <= time.time() + 1
    assert entry["id"] in manager.manager.core.dispatcher.workers
    gate.set()
    await finished(api, job_id)


async def test_pause_and_resume_all_workers(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """POST /workers/pause stops every assignment (jobs stay queued); resume lets them run."""
    await started(worker_factory(), manager, add)
    assert (await api.post("/workers/pause")).json() == {"paused": True, "worker": None}
    assert all(w["paused"] for w in (await api.get("/workers")).json()["workers"])
    job_id = (await api.post("/ETL/task/add", json={"a": 1})).json()["job_id"]
    # Dispatch happens when the job is created: had it been assigned, it would be running now.
    # With every worker paused the manager holds none ready: the job waits in the store.
    assert job_id not in manager.manager.core.active
    assert (await api.get(f"/jobs/{job_id}")).json()["status"] == "queued"
    assert (await api.get(f"/jobs/{job_id}/result", params={"timeout": 0.1})).status_code == 202
    assert (await api.post("/workers/resume", json={})).json() == {"paused": False,
                                                                  "worker": None}
    assert (await finished(api, job_id)).json()["result"] == 3
    assert not any(w["paused"] for w in (await api.get("/workers")).json()["workers"])


async def test_pause_and_resume_one_worker(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """Pausing one worker sends every new job to the other; resuming it brings it back."""
    await started(worker_factory(name="w-one"), manager, add)
    await started(worker_factory(name="w-two"), manager, add)
    await wait_until(lambda: len(manager.manager.core.dispatcher.workers) == 3,
                     what="two workers and the manager's own")
    ids = {w["name"]: w["id"] for w in (await api.get("/workers")).json()["workers"]}

    async def ran_on() -> set[str]:
        jobs = [(await api.post("/ETL/task/add", json={"a": i})).json()["job_id"]
                for i in range(6)]
        for job_id in jobs:
            await finished(api, job_id)
        return {(await api.get(f"/jobs/{job_id}")).json()["worker"] for job_id in jobs}

    response = await api.post("/workers/pause", json={"worker": ids["w-one"]})
    assert response.json() == {"paused": True, "worker": ids["w-one"]}
    paused = {w["name"]: w["paused"] for w in (await api.get("/workers")).json()["workers"]}
    assert paused == {"w-one": True, "w-two": False, "manager": False}
    assert await ran_on() == {"w-two"}
    await api.post("/workers/resume", json={"worker": ids["w-one"]})
    await api.post("/workers/pause", json={"worker": ids["w-two"]})
    assert await ran_on() == {"w-one"}
    await api.post("/workers/resume", json={"worker": ids["w-two"]})
    unknown = await api.post("/workers/pause", json={"worker": "nobody"})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "unknown_worker"
    for body in ({"worker": ["x"]}, {"worker": 5}, [1]):
        assert (await api.post("/workers/pause", json=body)).status_code == 422, body
    assert not any(w["paused"] for w in (await api.get("/workers")).json()["workers"])


async def test_queues(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """GET /queues: counts by status, tasks with signatures and schemas, schedules' next fire."""
    worker = worker_factory()

    async def yearly() -> None:
        return None

    worker.task(schedule="0 0 1 1 *")(yearly)
    worker.task(retry_policy="never")(boom)
    await started(worker, manager, add)
    await finished(api, (await api.post("/ETL/task/add", json={"a": 1})).json()["job_id"])
    await finished(api, (await api.post("/ETL/task/boom", json={"message": "x"})).json()["job_id"])
    await api.post("/workers/pause")
    await api.post("/ETL/task/add", json={"a": 2})
    queues = (await api.get("/queues")).json()["queues"]
    etl = queues["ETL"]
    assert etl["counts"] == {"succeeded": 1, "failed": 1, "queued": 1}
    tasks = {task["name"]: task for task in etl["tasks"]}
    assert set(tasks) == {"add", "boom", "yearly"}
    assert tasks["add"]["params"] == [
        {"name": "a", "kind": "positional_or_keyword", "has_default": False,
         "annotation": "int"},
        {"name": "b", "kind": "positional_or_keyword", "has_default": True,
         "annotation": "int", "default": 2},
    ]
    assert tasks["add"]["schema"] == {
        "type": "object", "additionalProperties": False, "required": ["a"],
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 2}}}
    assert tasks["boom"]["options"]["retry_policy"] == "never"
    assert tasks["add"]["next_fire"] is None
    assert tasks["yearly"]["options"]["schedule"] == "0 0 1 1 *"
    assert time.time() < tasks["yearly"]["next_fire"] <= time.time() + 367 * 86400
    await api.post("/workers/resume")


# ---------------------------------------------------------------------- OpenAPI

async def shapes(s: str, i: int, f: float, b: bool, d: dict, seq: list, o: int | None,
                 ints: list[int], table: dict[str, int], anything,
                 dflt: int = 3, *rest: int, kw: str = "x", **extra: int) -> None:
    return None


async def positional(a: int, /, b: str) -> None:
    return None


async def test_openapi_document(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """/openapi.json is valid OpenAPI 3.1 with one operation per task, typed from annotations."""
    await started(worker_factory(), manager, shapes, add, positional)
    doc = (await api.get("/openapi.json")).json()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    task_paths = sorted(path for path in doc["paths"] if "/task/" in path)
    assert task_paths == ["/ETL/task/add", "/ETL/task/positional", "/ETL/task/shapes"]
    operation = doc["paths"]["/ETL/task/shapes"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {
        "type": "object",
        "properties": {
            "s": {"type": "string"}, "i": {"type": "integer"}, "f": {"type": "number"},
            "b": {"type": "boolean"}, "d": {"type": "object"}, "seq": {"type": "array"},
            "o": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "ints": {"type": "array", "items": {"type": "integer"}},
            "table": {"type": "object", "additionalProperties": {"type": "integer"}},
            "anything": {}, "dflt": {"type": "integer", "default": 3},
            "kw": {"type": "string", "default": "x"},
        },
        "required": ["s", "i", "f", "b", "d", "seq", "o", "ints", "table", "anything"],
        "additionalProperties": True,  # **extra
    }
    assert {"200", "202", "401", "404", "413", "422"} <= set(operation["responses"])
    positional_schema = (doc["paths"]["/ETL/task/positional"]["post"]["requestBody"]
                         ["content"]["application/json"]["schema"])
    assert positional_schema["properties"] == {"b": {"type": "string"}}
    operation_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for fixed in ("/healthz", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/result",
                  "/jobs/{job_id}/cancel", "/workers", "/workers/pause", "/workers/resume",
                  "/queues"):
        assert fixed in doc["paths"], fixed


async def test_openapi_follows_new_registrations(
    manager: RunningManager, worker_factory: WorkerFactory, api: httpx.AsyncClient
) -> None:
    """A task registered later, by a running or a new worker, appears in the document."""
    worker = await started(worker_factory(), manager, add)

    async def late(when: str) -> str:
        return when

    async def other(n: int) -> int:
        return n

    paths = (await api.get("/openapi.json")).json()["paths"]
    assert "/ETL/task/late" not in paths
    worker.task()(late)
    await registered(manager, "ETL", "late")
    await started(worker_factory(queue="SECOND"), manager, other)
    doc = (await api.get("/openapi.json")).json()
    validate(doc)
    assert {"/ETL/task/late", "/SECOND/task/other", "/ETL/task/add"} <= set(doc["paths"])
    response = await api.post("/SECOND/task/other", params={"wait": TIMEOUT}, json={"n": 4})
    assert response.json()["result"] == 4


async def test_unknown_paths_and_wrong_methods_answer_json(api: httpx.AsyncClient) -> None:
    """A path no route serves is a JSON 404, a wrong method a JSON 405."""
    missing = await api.get("/no/such/route/here")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    wrong = await api.delete("/jobs")
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "bad_method"


async def test_revoking_a_credential_ends_its_http_waits_at_once(
        manager: RunningManager, api: httpx.AsyncClient,
        worker_factory: Callable[..., EasyJobsWorker]) -> None:
    """A client credential waiting over HTTP for a result gets 401 as soon as it is revoked,
    not the outcome at the end of its wait (the right to see it has gone)."""
    worker = worker_factory()
    release = asyncio.Event()

    @worker.task()
    async def held(x: int) -> int:
        await release.wait()
        return x

    await worker.start()
    made = await api.post("/credentials", json={"name": "etl-client", "role": "client",
                                                 "queues": ["ETL"]})
    assert made.status_code == 201, made.text
    async with httpx.AsyncClient(base_url=base_url(manager), timeout=TIMEOUT, headers={
            "Authorization": f"Bearer {made.json()['token']}"}) as client:
        submitted = await client.post("/ETL/task/held", json={"x": 1})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        waiting = asyncio.ensure_future(
            client.get(f"/jobs/{job_id}/result", params={"timeout": 60}))
        http = manager.manager.http
        assert http is not None
        await wait_until(lambda: "etl-client" in http._revocable, what="the wait to start")
        assert (await api.delete("/credentials/etl-client")).status_code == 200
        answer = await asyncio.wait_for(waiting, TIMEOUT)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["message"] == "credential 'etl-client' was revoked"
    assert "etl-client" not in http._revocable
    release.set()
