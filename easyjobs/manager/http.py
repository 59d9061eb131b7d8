"""The HTTP API: create jobs and read results over HTTP, see and steer the mesh.

Thin handlers over the core and the manager's own calls (the same submit path as any peer:
argument checks, commit before the answer, results pushed — ``?wait`` and ``/result`` wait on
the pushed result, never poll). Every route but ``/healthz`` needs ``Authorization: Bearer
<token>``: the manager secret or an API token (admin), or a credential's token, which sees and
acts on its own queues only (403 ``permission_denied`` otherwise; ``access``). Tokens are
compared in constant time; a token in a query string is never looked at. Every answer is JSON;
bytes travel as ``{"$base64": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from .. import tracing
from ..errors import (
    ConfigurationError,
    EasyJobsError,
    InvalidArguments,
    JobCancelled,
    PermissionDenied,
    ResultTimeout,
    SerializationError,
    TaskFailed,
    UnknownJob,
    UnknownTask,
)
from ..jobs import JobStatus
from ..jsonvalues import from_json, to_json
from ..protocol.frames import MAX_DEPTH
from . import dashboard, openapi
from .access import Grant
from .events import EventHub
from .metrics import CONTENT_TYPE, Metrics

if TYPE_CHECKING:
    from . import EasyJobsManager

log = logging.getLogger("easyjobs.manager")

MAX_BODY = 1 << 20
MAX_WAIT = 300.0
Handler = Callable[[Request], Awaitable[Response]]

_STATUS_FOR_ERROR: dict[type[EasyJobsError], int] = {
    UnknownTask: 404, UnknownJob: 404, InvalidArguments: 422, SerializationError: 422,
    PermissionDenied: 403, ConfigurationError: 422,
}


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "bad_request") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


class HttpApi:
    """The routes of one manager's HTTP API."""

    def __init__(self, manager: EasyJobsManager, tokens: list[bytes],
                 metrics_public: bool = False) -> None:
        self._manager = manager
        self._queries = manager.core.queries
        self._credentials = manager.core.credentials
        self._tokens = tokens
        self._metrics_public = metrics_public
        self.metrics = Metrics(manager.core.observers, self._queries, manager.endpoint)
        self.events = EventHub(manager.core.observers)
        self._revocable: dict[str, set[asyncio.Future[Any]]] = {}
        """credential name -> futures set when it is revoked: its requests in progress end"""
        self._credentials.on_revoked += [self.events.end, self._revoked]

    def routes(self) -> list[BaseRoute]:
        guarded = self._guarded
        return [
            Route("/healthz", self.healthz),
            Route("/openapi.json", guarded(self.openapi)),
            Route("/metrics", self.metrics_route),
            Route("/events", guarded(self.event_stream)),
            Route("/jobs", guarded(self.list_jobs)),
            Route("/jobs/{job_id}", guarded(self.get_job)),
            Route("/jobs/{job_id}/result", guarded(self.get_result)),
            Route("/jobs/{job_id}/cancel", guarded(self.cancel), methods=["POST"]),
            Route("/workers", guarded(self.workers)),
            Route("/workers/pause", guarded(self.pause), methods=["POST"]),
            Route("/workers/resume", guarded(self.resume), methods=["POST"]),
            Route("/queues", guarded(self.queues)),
            Route("/credentials", guarded(self.list_credentials)),
            Route("/credentials", guarded(self.add_credential), methods=["POST"]),
            Route("/credentials/{name}", guarded(self.revoke_credential), methods=["DELETE"]),
            Route("/{queue}/task/{task}", guarded(self.run_task), methods=["POST"]),
            *dashboard.routes(),  # the page needs no token; its API calls do
        ]

    # ------------------------------------------------------------------ plumbing

    def authorized(self, request: Request) -> Grant | None:
        """The grant of the request's bearer token, None without a valid one."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        return self._credentials.bearer(token.strip().encode(), self._tokens)

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            grant = self.authorized(request)
            if grant is None:
                return error(401, "missing or wrong bearer token", "unauthorized")
            if grant.role == "worker":  # it serves jobs over its link, nothing more
                refused = grant.denied("use the HTTP API")
                return error(403, str(refused), refused.code)
            request.state.grant = grant
            try:
                if grant.credential:  # a named credential: revoking it ends what it awaits
                    return await self._unless_revoked(grant.credential, handler(request))
                return await handler(request)
            except HTTPError as exc:
                return error(exc.status, exc.message, exc.kind)
            except EasyJobsError as exc:
                status = _STATUS_FOR_ERROR.get(type(exc), 503)
                return error(status, str(exc), exc.code)
            except ClientDisconnect:  # gone while sending its body: nobody reads an answer
                return error(400, "the client went away", "client_disconnected")
            except Exception:  # still a JSON answer; the details stay in the log
                log.exception("HTTP %s %s failed", request.method, request.url.path)
                return error(500, "internal error; see the manager's log", "internal_error")

        return guarded

    async def _unless_revoked(self, name: str, handling: Awaitable[Response]) -> Response:
        """``handling``'s response, or 401 if credential ``name`` is revoked meanwhile (a
        wait for a result must not outlive the right to see it)."""
        task: asyncio.Future[Response] = asyncio.ensure_future(handling)
        revoked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._revocable.setdefault(name, set()).add(revoked)
        try:
            await asyncio.wait({task, revoked}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            waiting = self._revocable.get(name, set())
            waiting.discard(revoked)
            if not waiting:
                self._revocable.pop(name, None)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return error(401, f"credential {name!r} was revoked", "unauthorized")

    def _revoked(self, names: set[str]) -> None:
        for name in names:
            for revoked in self._revocable.pop(name, set()):
                if not revoked.done():
                    revoked.set_result(None)

    @staticmethod
    def _grant(request: Request) -> Grant:
        grant: Grant = request.state.grant
        return grant

    def _admin(self, request: Request, action: str) -> None:
        grant = self._grant(request)
        if not grant.admin:
            raise grant.denied(action)

    def _use(self, request: Request, queue: str, action: str) -> None:
        grant = self._grant(request)
        if not grant.may_use(queue):
            raise grant.denied(action)

    async def _job(self, request: Request, action: str) -> dict[str, Any]:
        """The job of the path, once the request's credential may use its queue."""
        job_id = request.path_params["job_id"]
        info = await self._manager.calls.lookup(job_id)
        self._use(request, info["queue"], f"{action} job {job_id} of queue {info['queue']!r}")
        return info

    @staticmethod
    def _number(request: Request, name: str, default: float | None) -> float | None:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise HTTPError(400, f"{name} must be a number of seconds") from None
        if not 0 <= value <= MAX_WAIT:
            raise HTTPError(400, f"{name} must be between 0 and {MAX_WAIT:g}")
        return value

    @staticmethod
    async def _body(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            raise HTTPError(413, f"body over {MAX_BODY} bytes", "too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise HTTPError(413, f"body over {MAX_BODY} bytes", "too_large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise HTTPError(400, "the body is not valid JSON", "invalid_json") from None
        if _nests_deeper(value, MAX_DEPTH):  # before any recursive walk over it
            raise HTTPError(422, f"the body nests deeper than {MAX_DEPTH} levels",
                            "invalid_arguments")
        return value

    # ------------------------------------------------------------------ routes

    async def healthz(self, request: Request) -> Response:
        problem = await self._queries.store_problem()
        if problem is not None:
            return JSONResponse({"status": "store_unwritable", "reason": problem},
                                status_code=503)
        return JSONResponse({"status": "ok"})

    async def openapi(self, request: Request) -> Response:
        grant = self._grant(request)
        return JSONResponse(openapi.document(
            [s for s in self._queries.task_specs() if grant.covers(s.queue)]))

    async def metrics_route(self, request: Request) -> Response:
        if not self._metrics_public:
            grant = self.authorized(request)
            if grant is None:
                return error(401, "missing or wrong bearer token", "unauthorized")
            if not grant.admin:
                exc = grant.denied("read the metrics")
                return error(403, str(exc), exc.code)
        return Response(await self.metrics.render(), media_type=CONTENT_TYPE)

    async def run_task(self, request: Request) -> Response:
        queue, task = request.path_params["queue"], request.path_params["task"]
        self._use(request, queue, f"submit to queue {queue!r}")
        wait = self._number(request, "wait", None)
        spec = self._queries.task_spec(queue, task)
        if spec is None:
            raise HTTPError(404, f"no worker has registered task {task!r} in queue {queue!r}",
                            "unknown_task")
        body = await self._body(request)
        if not isinstance(body, dict):
            raise HTTPError(422, "the body must be a JSON object of keyword arguments, or "
                                 '{"args": [...], "kwargs": {...}}', "invalid_arguments")
        names = {p.name for p in spec.params}
        explicit = body and set(body) <= {"args", "kwargs"} and not names & {"args", "kwargs"}
        args = body.get("args", []) if explicit else []
        kwargs = body.get("kwargs", {}) if explicit else body
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise HTTPError(422, "args must be a list and kwargs an object", "invalid_arguments")
        try:
            args, kwargs = from_json(args), from_json(kwargs)
        except ValueError as exc:
            raise HTTPError(422, str(exc), "invalid_arguments") from None
        with tracing.continuing(request.headers):  # the job joins the caller's trace
            job = await self._manager.calls.submit(queue, task, args, kwargs)
        if wait is None:
            return JSONResponse({"job_id": job.id, "status": "queued"}, status_code=202)
        outcome = await self._outcome(job.id, wait)
        return JSONResponse(outcome, status_code=202 if outcome["status"] in _PENDING else 200)

    async def _outcome(self, job_id: str, timeout: float) -> dict[str, Any]:
        """The job's result if it finishes within ``timeout`` (pushed), else its status."""
        try:
            value = await self._manager.calls.result(job_id, timeout)
        except ResultTimeout:
            info = await self._manager.calls.lookup(job_id)
            outcome = {"job_id": job_id, "status": info["status"]}
            if info["status"] == JobStatus.SUCCEEDED.value:
                outcome["result"] = to_json(info["result"])
            elif info["status"] not in _PENDING:
                outcome["error"] = info["error"]
            return outcome
        except JobCancelled:
            return {"job_id": job_id, "status": JobStatus.CANCELLED.value}
        except TaskFailed as exc:
            return {"job_id": job_id, "status": JobStatus.FAILED.value,
                    "error": {"type": exc.type, "message": exc.message,
                              "traceback": exc.traceback}}
        return {"job_id": job_id, "status": JobStatus.SUCCEEDED.value, "result": to_json(value)}

    async def get_job(self, request: Request) -> Response:
        return JSONResponse(to_json(await self._job(request, "read")))

    async def get_result(self, request: Request) -> Response:
        timeout = self._number(request, "timeout", 0.0)
        assert timeout is not None
        job_id = request.path_params["job_id"]
        await self._job(request, "await")  # UnknownJob -> 404 before any wait
        outcome = await self._outcome(job_id, timeout)
        status = {JobStatus.SUCCEEDED.value: 200, JobStatus.FAILED.value: 424,
                  JobStatus.CANCELLED.value: 409}.get(outcome["status"], 202)
        return JSONResponse(outcome, status_code=status)

    async def cancel(self, request: Request) -> Response:
        await self._job(request, "cancel")
        record = await self._manager.calls.cancel(request.path_params["job_id"])
        return JSONResponse(to_json(record))

    async def list_jobs(self, request: Request) -> Response:
        params = request.query_params
        status = params.get("status")
        if status is not None and status not in {s.value for s in JobStatus}:
            raise HTTPError(400, f"unknown status {status!r}")
        try:
            limit = int(params.get("limit", "50"))
        except ValueError:
            raise HTTPError(400, "limit must be an integer") from None
        if not 1 <= limit <= 1000:
            raise HTTPError(400, "limit must be between 1 and 1000")
        grant, queue = self._grant(request), params.get("queue")
        if queue is not None:
            self._use(request, queue, f"list queue {queue!r}")
        elif not grant.admin and grant.role != "client":
            raise grant.denied("list jobs")
        jobs, cursor = await self._manager.calls.list_jobs(
            queue=queue, task=params.get("task"), status=status, limit=limit,
            before=params.get("cursor"),
            queues=None if grant.queues is None else sorted(grant.queues))
        return JSONResponse({"jobs": to_json(jobs), "next": cursor})

    async def workers(self, request: Request) -> Response:
        self._admin(request, "list the workers")
        return JSONResponse({"workers": await self._queries.workers()})

    async def _toggle(self, request: Request, pause: bool) -> Response:
        self._admin(request, "pause or resume workers")
        body = await self._body(request)
        if not isinstance(body, dict):
            raise HTTPError(422, 'the body must be empty or {"worker": "<id>"}',
                            "invalid_arguments")
        worker = body.get("worker")
        if worker is not None and not isinstance(worker, str):
            raise HTTPError(422, "worker must be a worker id (a string)", "invalid_arguments")
        if worker is not None and not self._queries.has_worker(worker):
            raise HTTPError(404, f"no connected worker {worker!r}", "unknown_worker")
        self._manager.toggle_workers(pause, worker)
        return JSONResponse({"paused": pause, "worker": worker})

    async def pause(self, request: Request) -> Response:
        return await self._toggle(request, True)

    async def resume(self, request: Request) -> Response:
        return await self._toggle(request, False)

    async def queues(self, request: Request) -> Response:
        grant = self._grant(request)
        queues = await self._queries.queues()
        return JSONResponse({"queues": to_json(
            {name: queue for name, queue in queues.items() if grant.covers(name)})})

    async def event_stream(self, request: Request) -> Response:
        grant = self._grant(request)
        queue = self.events.subscribe(grant.credential)
        if grant.credential and self._credentials.grant(grant.credential) is None:
            self.events.end({grant.credential})  # revoked since its token was checked
            return error(401, "missing or wrong bearer token", "unauthorized")

        async def lines() -> AsyncIterator[bytes]:
            yield b": connected\n\n"
            async for event in self.events.stream(queue):
                if grant.admin or (event["kind"] == "job"
                                   and grant.may_use(event["job"]["queue"])):
                    yield b"data: " + json.dumps(to_json(event)).encode() + b"\n\n"

        return StreamingResponse(lines(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})


    async def list_credentials(self, request: Request) -> Response:
        self._admin(request, "list credentials")
        return JSONResponse({"credentials": self._credentials.listing()})

    async def add_credential(self, request: Request) -> Response:
        """``{"name", "role", "queues"}`` -> the new credential with its token, shown once."""
        self._admin(request, "add credentials")
        body = await self._body(request)
        fields = body if isinstance(body, dict) else {}
        name, role, queues = fields.get("name"), fields.get("role"), fields.get("queues")
        if not (isinstance(name, str) and isinstance(role, str)
                and (queues is None or isinstance(queues, list))):
            raise HTTPError(422, 'the body must be {"name": ..., "role": "worker" | "client" '
                                 '| "admin", "queues": [...]}', "invalid_arguments")
        token = await self._credentials.add(name, role, queues)
        return JSONResponse({"name": name, "role": role, "queues": queues, "token": token},
                            status_code=201)

    async def revoke_credential(self, request: Request) -> Response:
        self._admin(request, "revoke credentials")
        name = request.path_params["name"]
        if not await self._credentials.revoke(name):
            raise HTTPError(404, f"no credential {name!r}", "unknown_credential")
        return JSONResponse({"revoked": name})


_PENDING = {"waiting", "queued", "running", "retrying"}


def _nests_deeper(value: Any, limit: int) -> bool:
    """True if lists and objects in ``value`` nest more than ``limit`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in item)
    return False
