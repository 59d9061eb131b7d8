"""EasyJobsWorker: the tasks a program registers, a link to the manager, and a runner.

Lifecycle only: the link knows nothing about running tasks and the runner nothing about sockets;
this class joins them. The link runs in a thread of its own (``Link(thread=True)``), so a task
that blocks the event loop does not silence the worker's heartbeats. It installs no signal
handlers — the host application (or the CLI, which owns its process) decides when to call
``stop``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import inspect
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, overload

from ..addresses import ManagerAddress, describe, resolve_managers
from ..config import read_secret
from ..errors import ConfigurationError, ConnectionLost, EasyJobsError
from ..protocol.frames import (
    Abort,
    Assign,
    Credit,
    Done,
    DoneAck,
    Error,
    Frame,
    Pause,
    Register,
    Resume,
    Revoke,
    encode_frame,
)
from ..remote import Calls, P, R, RemoteTask, TaskDecorator
from ..tasks import TaskSpec, check_name, find_cycle, make_options, spec_for
from ..tls import ClientTLS, client_tls
from .child import child_runner, script_for
from .link import DEFAULT_BACKOFF, Link
from .local import nested_call_refused, run_local, running_locally
from .runner import NESTED_CALL_IN_THREAD, Runner, in_task_thread

log = logging.getLogger("easyjobs.worker")


class LinkLike(Protocol):
    """What a worker needs of its link: ``Link`` over a WebSocket, or the manager's loopback."""

    name: str
    calls: Calls
    on_frame: Callable[[Frame], None] | None
    on_open: Callable[[], None] | None
    on_lost: Callable[[], None] | None

    @property
    def is_open(self) -> bool: ...
    def send(self, frame: Frame) -> None: ...
    async def start(self, connect_timeout: float = ...) -> None: ...
    async def close(self) -> None: ...


class EasyJobsWorker:
    """A worker: ``@worker.task()`` registers tasks, ``start()`` connects and takes jobs.

    ``server`` is the host FastAPI/Starlette app (the worker stops when the app shuts down,
    where the app supports shutdown handlers) or None. ``server_secret`` is accepted for
    compatibility with easyjobs 0.x, whose workers ran their own RPC server; the link to the
    manager is authenticated with ``manager_secret`` alone.

    Where the managers are: ``managers=["10.0.0.1:8220", "wss://10.0.0.2:8220"]``, tried in
    order (see ``easyjobs.addresses``), or the 0.x pair ``manager_host``/``manager_port`` (a
    list of one), or else ``EASYJOBS_MANAGERS``, or else ``EASYJOBS_HOST``/``EASYJOBS_PORT``,
    or else 127.0.0.1:8220. ``manager_secret`` is the manager's secret or a credential token
    (``easyjobs credentials add``); left out, it is read from ``EASYJOBS_SECRET_FILE`` or
    ``EASYJOBS_SECRET``, as the CLI does. ``tls=True`` reaches
    every manager written without a scheme over TLS; ``ca_file`` (else ``EASYJOBS_TLS_CA``,
    else the system's trust store) verifies their certificates; ``client_cert`` and
    ``client_key`` are presented to managers that require one (see ``easyjobs.tls``).
    """

    def __init__(
        self,
        server: Any = None,
        server_secret: str | None = None,
        manager_host: str | None = None,
        manager_port: int | None = None,
        manager_secret: str | bytes | None = None,
        jobs_queue: str = "DEFAULT",
        max_tasks_per_worker: int = 10,
        *,
        managers: str | Sequence[str] | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        name: str | None = None,
        backoff: Callable[[int], float] = DEFAULT_BACKOFF,
        connect_timeout: float = 10.0,
        grace: float = 30.0,
        link: LinkLike | None = None,
    ) -> None:
        if max_tasks_per_worker < 1:
            raise ConfigurationError("max_tasks_per_worker must be at least 1")
        self.server = server
        self.queue = check_name(jobs_queue, "jobs_queue")
        self.max_tasks = max_tasks_per_worker
        self.grace = grace
        self._connect_timeout = connect_timeout
        self._tasks: dict[tuple[str, str], tuple[TaskSpec, Callable[..., Any], bool]] = {}
        """(queue, name) -> spec, the function to run, and whether it runs in a thread"""
        self._paused = False
        secret = None
        if link is None:
            secret = read_secret(manager_secret, option="manager_secret=")
        elif manager_secret:
            secret = manager_secret.encode() if isinstance(manager_secret, str) else manager_secret
        self._secret = secret
        self.managers: tuple[ManagerAddress, ...] = ()
        """The managers the link tries, in order (none for the manager's own local worker)."""
        self._address = "the manager's loopback"
        self._hooked = False
        self._backoff = backoff
        if link is None:
            assert secret is not None
            self.managers = resolve_managers(managers, manager_host, manager_port, tls=tls)
            link = self._new_link(secret, name, client_tls(
                self.managers, ca_file=ca_file, client_cert=client_cert, client_key=client_key))
        self._attach(link)

    def _new_link(self, secret: bytes, name: str | None, tls: ClientTLS | None) -> Link:
        self._address = describe(self.managers)
        return Link(self.managers, secret, role="worker", name=name, backoff=self._backoff,
                    thread=True, on_failed=self._on_failed, tls=tls)

    def _attach(self, link: LinkLike) -> None:
        """Take ``link`` and start afresh: no runner yet, nothing unacknowledged, not closed."""
        link.on_frame, link.on_open, link.on_lost = self._on_frame, self._on_open, self._on_lost
        self._link: LinkLike = link
        self._runner: Runner | None = None
        self._unacked: dict[tuple[str, int], Done] = {}
        """Outcomes reported and not yet acknowledged, by (job, attempt), oldest first."""
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()
        self._error: EasyJobsError | None = None
        self._started = False

    def uses_secret(self, secret: bytes) -> bool:
        """Whether this worker authenticates with ``secret`` (compared in constant time)."""
        return self._secret is not None and hmac.compare_digest(self._secret, secret)

    def retarget(self, managers: str | Sequence[str], manager_secret: str | bytes) -> None:
        """Point this worker, while it is not running, at other managers with another secret.

        For test harnesses (``easyjobs.testing``): a worker built at import with production
        addresses is sent to an in-process manager instead, and may be started (``start``)
        again afterwards, on another event loop too. The TLS files given at construction are
        not carried over: the new managers are reached as written. ``ConfigurationError`` if
        the worker is running, or is a manager's own local worker.
        """
        if not self.managers:
            raise ConfigurationError("a manager's local worker cannot be retargeted")
        if self._link.is_open or (self._runner is not None and not self._closed.is_set()):
            raise ConfigurationError("stop the worker before retargeting it")
        if not manager_secret:
            raise ConfigurationError("manager_secret is required")
        secret = manager_secret.encode() if isinstance(manager_secret, str) else manager_secret
        self.managers = resolve_managers(managers, None, None)
        self._secret = secret
        self._attach(self._new_link(secret, self._link.name, client_tls(self.managers)))

    @property
    def specs(self) -> tuple[TaskSpec, ...]:
        """The specs of the tasks registered on this worker, as it advertises them."""
        return tuple(spec for spec, _, _ in self._tasks.values())

    @classmethod
    async def create(cls, server: Any = None, *args: Any, **kwargs: Any) -> EasyJobsWorker:
        """Construct and start a worker (the easyjobs 0.x entry point)."""
        worker = cls(server, *args, **kwargs)
        await worker.start()
        return worker

    @property
    def name(self) -> str:
        return self._link.name

    @property
    def connected(self) -> bool:
        """Whether the link to the manager is open now."""
        return self._link.is_open

    @property
    def error(self) -> EasyJobsError | None:
        """Why the link ended for good on its own (say, the manager now refuses the secret)."""
        return self._error

    async def wait_connected(self) -> None:
        """Return once the link to the manager is open."""
        await self._connected.wait()

    async def wait_closed(self) -> None:
        """Return once the worker has stopped; raise ``error`` if its link failed for good.

        A worker whose link fails after start-up takes no more jobs: a host application
        awaits this to learn of it (``easyjobs worker`` exits 1).
        """
        await self._closed.wait()
        if self._error is not None:
            raise self._error

    @property
    def calls(self) -> Calls:
        """The worker's calls to the manager (what its remote tasks use)."""
        return self._link.calls

    # ---------------------------------------------------------------- tasks

    def task(
        self,
        namespace: str | None = None,
        on_failure: str | None = None,
        retry_policy: str | None = "retry_once",
        run_before: list[str] | None = None,
        run_after: list[str] | None = None,
        subprocess: bool | None = False,
        schedule: str | None = None,
        default_args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        timezone: str | None = None,
        task_dir: str | None = None,
    ) -> TaskDecorator:
        """Register a function as a task of this worker's queue (or ``namespace``).

        An ``async def`` task runs on the worker's event loop; a ``def`` task runs in a thread
        of its own, one per slot, so it may block (but cannot call other tasks, and a thread
        that outlives its ``timeout`` keeps its slot until it returns).

        The options are those of easyjobs 0.x plus ``timeout`` (seconds per attempt; an attempt
        over it is cancelled and fails), ``timezone`` (for ``schedule``; default UTC) and
        ``task_dir`` (for ``subprocess=True``; default ``$WORKER_TASK_DIR``, where
        ``<task>.py`` must exist). They are validated here, so a bad one fails at import.
        Returns a ``RemoteTask``: awaiting it runs the task on some worker via the manager.
        """
        options = make_options(
            on_failure=on_failure, retry_policy=retry_policy, run_before=run_before,
            run_after=run_after, subprocess=subprocess, schedule=schedule,
            default_args=default_args, timeout=timeout, timezone=timezone,
        )
        queue = check_name(namespace, "namespace") if namespace else self.queue

        @overload
        def register(fn: Callable[P, Coroutine[Any, Any, R]], /) -> RemoteTask[P, R]: ...
        @overload
        def register(fn: Callable[P, R], /) -> RemoteTask[P, R]: ...
        def register(fn: Callable[..., Any], /) -> RemoteTask[..., Any]:
            spec = spec_for(fn, queue, options)
            run = fn
            if options.subprocess:
                run = child_runner(script_for(spec.name, task_dir), self._secret)
            specs = {key: known for key, (known, _, _) in self._tasks.items()}
            specs[(queue, spec.name)] = spec
            cycle = find_cycle(specs)
            if cycle:
                raise ConfigurationError(f"run_before cycle: {' -> '.join(cycle)}")
            self._tasks[(queue, spec.name)] = (spec, run, not inspect.iscoroutinefunction(run))
            if self._link.is_open:
                self._link.send(Register([spec.to_wire()], self.max_tasks))
            return RemoteTask(self._task_calls, queue, spec.name, fn,
                              functools.partial(run_local, spec, run))

        return register

    def remote(self, queue: str, name: str) -> RemoteTask[..., Any]:
        """An awaitable remote function for a task registered elsewhere (another worker or
        the manager): ``await worker.remote('general', 'general_work')(data)``."""
        return RemoteTask(self._task_calls, queue, name)

    def _task_calls(self) -> Calls:
        """The calls of a remote task; refused in a sync task's thread (the loop owns them) and
        in a body run by ``run_local``."""
        if in_task_thread():
            raise ConfigurationError(NESTED_CALL_IN_THREAD)
        local = running_locally.get()
        if local is not None:
            raise ConfigurationError(nested_call_refused(local))
        return self._link.calls

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect to the manager and start taking jobs (see ``Link.start`` for errors).

        If no manager answers within ``connect_timeout``, this logs a warning and returns;
        the worker keeps trying in the background and takes jobs once connected.
        """
        if self._runner is None:
            self._runner = Runner(self.max_tasks, self._grant, self._report, self._revoke,
                                  self.name)
        self._hook_shutdown()
        await self._link.start(self._connect_timeout)
        self._started = True
        if not self._link.is_open:
            log.warning("worker %s: no manager answered at %s within %gs; still trying in "
                        "the background (check that `easyjobs manager` is running there)",
                        self.name, self._address, self._connect_timeout)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking work, let running jobs finish within ``grace`` seconds, then leave.

        Jobs still running after the grace period are cancelled; the manager requeues them
        when the link closes.
        """
        if self._runner is not None:
            if self._link.is_open:
                self._link.send(Pause(True))
            leftover = await self._runner.drain(self.grace if grace is None else grace)
            if leftover:
                log.warning("stopped with %d job(s) unfinished; the manager requeues them",
                            len(leftover))
        await self._link.close()
        self._closed.set()

    async def __aenter__(self) -> EasyJobsWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def toggle_workers(self, pause: bool = True) -> None:
        """Pause (no new assignments; running jobs finish) or resume this worker."""
        self._paused = pause
        if self._link.is_open:
            self._link.send(Pause(pause))

    def _hook_shutdown(self) -> None:
        router = getattr(self.server, "router", None)
        handlers = getattr(router, "on_shutdown", None)
        if isinstance(handlers, list) and not self._hooked:
            handlers.append(self.stop)
            self._hooked = True

    # ---------------------------------------------------------------- link callbacks

    def _on_open(self) -> None:
        assert self._runner is not None
        self._connected.set()
        # Outcomes the manager has not acknowledged: finished while the link was down, or sent
        # on a connection that closed before the manager committed them. The first one wins.
        for done in self._unacked.values():
            self._link.send(done)
        # Before the register: the manager takes these jobs back for this worker before the
        # register makes it claim queued jobs for anyone (they may be among them).
        if self._runner.running_jobs:
            self._link.send(Resume(self._runner.running_jobs))
        if self._tasks:
            self._link.send(Register([spec.to_wire() for spec, _, _ in self._tasks.values()],
                                     self.max_tasks))
        if self._paused:
            self._link.send(Pause(True))
        self._runner.open()

    def _on_lost(self) -> None:
        self._connected.clear()
        if self._runner is not None:
            self._runner.link_lost()

    def _on_failed(self, error: EasyJobsError) -> None:
        """The link ended for good: no more jobs come; tell the host (``start`` raises itself)."""
        self._error = error
        if self._started:
            log.error("worker %s takes no more jobs: its link to the manager at %s failed "
                      "for good (%s)", self.name, self._address, error)
        if self._runner is not None:
            self._runner.link_lost()
        self._closed.set()

    def _on_frame(self, frame: Frame) -> None:
        if self._runner is None:
            return
        if isinstance(frame, Assign):
            entry = self._tasks.get((frame.queue, frame.task))
            if entry is None:
                self._runner.start(frame, None)
            else:
                spec, fn, in_thread = entry
                self._runner.start(frame, fn, spec.options.timeout, in_thread)
        elif isinstance(frame, DoneAck):
            self._unacked.pop((frame.job, frame.attempt), None)
        elif isinstance(frame, Abort):
            self._runner.abort(frame.job)
        elif isinstance(frame, Error):
            log.error("the manager reported %s: %s", frame.code, frame.message)
        else:
            log.warning("ignoring unexpected %s frame from the manager", frame.type)

    def _grant(self, n: int) -> None:
        if self._link.is_open:
            self._link.send(Credit(n))

    def _revoke(self, n: int) -> None:
        if self._link.is_open:
            self._link.send(Revoke(n))

    def _report(self, done: Done) -> None:
        """Send an attempt's outcome and keep it until the manager acknowledges it.

        Unacknowledged outcomes are re-sent on every new connection. They are all kept, however
        many: each is a result the task computed, and the manager acknowledges each one it
        commits, so they pile up only while it cannot.
        """
        sent = False
        if self._link.is_open:
            try:
                self._link.send(done)
                sent = True
            except ConnectionLost:  # the link just closed under us: re-sent on the next one
                pass
        if not sent:
            encode_frame(done)  # a result that can never be sent fails now, as when connected
        self._unacked[(done.job, done.attempt)] = done
