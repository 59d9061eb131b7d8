"""EasyJobsManager: owns the queues and the job store, and serves workers and clients.

It mounts its WebSocket endpoint (``/ws/jobs``) into a Starlette or FastAPI app, so it can live
inside an existing service or alone (``easyjobs manager``, or ``easyjobs.manager.app:create_app``
as an ASGI factory). Tasks registered with ``manager.task`` run inside the manager process through
the same worker code as remote tasks.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.routing import WebSocketRoute

from ..addresses import advertised_url
from ..config import read_advertise, read_secret
from ..errors import ConfigurationError
from ..protocol.auth import split_secret
from ..protocol.frames import DEFAULT_MAX_MESSAGE, HANDSHAKE_MAX_MESSAGE
from ..remote import Calls, RemoteTask, TaskDecorator
from ..store import Store, open_store, store_location
from ..workers.link import WS_PATH
from ..workers.worker import EasyJobsWorker
from .core import Core
from .endpoint import (
    HANDSHAKE_TIMEOUT,
    MAX_BACKLOG,
    MAX_CONNECTIONS,
    MAX_UNAUTHENTICATED,
    Endpoint,
)
from .http import HttpApi
from .lifecycle import JobPolicy
from .loopback import LoopbackLink

log = logging.getLogger("easyjobs.manager")

class EasyJobsManager:
    """A manager. ``await EasyJobsManager.create(app, server_secret=...)`` starts one in ``app``.

    ``server_secret`` left out is read from ``EASYJOBS_SECRET_FILE`` or ``EASYJOBS_SECRET``.

    ``db_path`` (default: env ``EASYJOBS_DB`` or its alias ``DB_PATH``, else ``easyjobs.db``)
    is an SQLite file or a ``postgresql://`` URL (``open_store``); ``store`` passes any other
    ``Store``. ``heartbeat`` is the interval in seconds both
    ends use; a peer silent for five intervals, or one whose writes make no progress for as long,
    is dropped. ``handshake_timeout`` is how long a new connection may take to authenticate
    before it is closed (4003). ``max_backlog`` bytes held for one peer, queued or being
    written, drop it (4004): raise it if workers take many large jobs at once (their slots times
    the argument size). ``max_connections`` WebSocket connections at once, and
    ``max_unauthenticated`` of them still authenticating, are served; more get HTTP 503 (and
    retry). The caller owns
    shutdown: call ``close()`` from the app's lifespan (FastAPI's shutdown event is hooked
    automatically). A failed attempt is retried (per the task's retry_policy) after
    ``min(retry_cap, retry_base * 2**(attempts-1))`` seconds, less up to half at random.
    A job whose worker is lost while running it ``max_worker_losses`` times fails with
    ``WorkerLost`` instead of taking down worker after worker. ``http_api`` adds the HTTP API,
    metrics and dashboard routes (the standalone manager has them); bearer tokens are the
    secret and ``api_tokens``. ``/metrics`` needs a token unless ``metrics_public``.
    ``advertise`` (default: env ``EASYJOBS_ADVERTISE``) is where the other managers on a
    shared PostgreSQL store reach this one, ``host:port`` or a ``ws://``/``wss://`` URL; they
    then send it the jobs that only its workers serve directly (see ``forwarding``).
    """

    def __init__(
        self,
        server: Any = None,
        server_secret: str | bytes | None = None,
        *,
        db_path: str | None = None,
        store: Store | None = None,
        heartbeat: float = 1.0,
        max_message: int = DEFAULT_MAX_MESSAGE,
        max_local_tasks: int = 10,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        max_backlog: int = MAX_BACKLOG,
        max_connections: int = MAX_CONNECTIONS,
        max_unauthenticated: int = MAX_UNAUTHENTICATED,
        retry_base: float = 1.0,
        retry_cap: float = 60.0,
        max_worker_losses: int = 3,
        http_api: bool = False,
        api_tokens: list[str] | None = None,
        metrics_public: bool = False,
        advertise: str | None = None,
    ) -> None:
        if heartbeat <= 0 or handshake_timeout <= 0:
            raise ConfigurationError("heartbeat and handshake_timeout must be positive")
        if not HANDSHAKE_MAX_MESSAGE <= max_message <= max_backlog // 2:
            raise ConfigurationError(
                f"max_message must be between {HANDSHAKE_MAX_MESSAGE} and max_backlog / 2 "
                f"({max_backlog // 2})")
        if max_connections < 1 or max_unauthenticated < 1:
            raise ConfigurationError("max_connections and max_unauthenticated must be positive")
        self.server = server
        secret = read_secret(server_secret, option="server_secret=")
        if split_secret(secret)[0]:
            raise ConfigurationError(
                "server_secret looks like a credential's token (ej1.<name>.<key>): the manager "
                "needs its own secret, from which credentials are derived")
        self.store = store or open_store(store_location(db_path))
        if max_worker_losses < 1:
            raise ConfigurationError("max_worker_losses must be at least 1")
        self.core = Core(self.store, JobPolicy(retry_base, retry_cap, max_worker_losses),
                         secret)
        advertise = advertise or read_advertise()
        if advertise is not None:
            self.core.forwarding.address = advertised_url(advertise)
        self.endpoint = Endpoint(
            self.core, secret, heartbeat, max_message, handshake_timeout,
            max_backlog=max_backlog, max_connections=max_connections,
            max_unauthenticated=max_unauthenticated)
        self._loopback = LoopbackLink(self.core, max_message)
        self._local = EasyJobsWorker(link=self._loopback, manager_secret=secret,
                                     jobs_queue="DEFAULT", max_tasks_per_worker=max_local_tasks)
        self.http: HttpApi | None = None
        if http_api:
            tokens = [secret, *(t.encode() for t in api_tokens or [] if t)]
            self.http = HttpApi(self, tokens, metrics_public)
        self._started = False
        self._mounted = False

    @classmethod
    async def create(cls, server: Any = None, *args: Any, **kwargs: Any) -> EasyJobsManager:
        """Construct a manager, mount it into ``server`` and start it."""
        manager = cls(server, *args, **kwargs)
        await manager.start()
        return manager

    @property
    def calls(self) -> Calls:
        """Submit and await jobs from inside the manager process."""
        return self._loopback.calls

    def mount(self, app: Any) -> None:
        """Add the ``/ws/jobs`` route (and the HTTP API, if enabled) to a Starlette/FastAPI app.

        ``start`` mounts ``server`` itself.
        """
        app.router.routes.append(WebSocketRoute(WS_PATH, self.endpoint.serve))
        if self.http is not None:
            app.router.routes.extend(self.http.routes())

    async def start(self) -> None:
        """Open the store, recover unfinished jobs, mount the endpoint and start local tasks."""
        if self._started:
            return
        await self.core.start()
        self._started = True
        if self.server is not None and not self._mounted:
            self.mount(self.server)
            self._mounted = True
            handlers = getattr(getattr(self.server, "router", None), "on_shutdown", None)
            if isinstance(handlers, list):
                handlers.append(self.close)
        await self._local.start()

    async def close(self) -> None:
        """Close every connection (peers reconnect later), stop local tasks, close the store."""
        if not self._started:
            return
        self._started = False
        self.endpoint.close_all()
        if self.http is not None:
            self.http.events.close()
        await self._local.stop(grace=0)
        await self.core.stop()

    async def __aenter__(self) -> EasyJobsManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def task(
        self,
        namespace: str = "DEFAULT",
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
        """Register a task that runs in the manager process, in queue ``namespace``.

        The options are those of ``EasyJobsWorker.task``.
        """
        return self._local.task(
            namespace=namespace, on_failure=on_failure, retry_policy=retry_policy,
            run_before=run_before, run_after=run_after, subprocess=subprocess,
            schedule=schedule, default_args=default_args, timeout=timeout, timezone=timezone,
            task_dir=task_dir,
        )

    def remote(self, queue: str, name: str) -> RemoteTask[..., Any]:
        """An awaitable remote function for a task some worker registered."""
        return self._local.remote(queue, name)

    def toggle_workers(self, pause: bool = True, worker_id: str | None = None) -> None:
        """Pause (no new assignments; running jobs finish) or resume all workers, or one."""
        self.core.toggle_workers(pause, worker_id)


__all__ = ["EasyJobsManager"]
