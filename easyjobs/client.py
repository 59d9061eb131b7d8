"""EasyJobsClient: submit jobs and await their results from any asyncio program.

    async with EasyJobsClient(managers=["10.0.0.1:8220", "10.0.0.2:8220"], secret=secret) as client:
        result = await client.call("ETL", "extract", url="x")

Results are pushed by the manager over the client's one WebSocket; nothing polls. The link runs
on the caller's own event loop (a worker's runs in a thread): a caller that blocks its loop only
delays its own calls, and keeping to one loop keeps a call's round trip at its shortest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .addresses import ManagerAddress, describe, resolve_managers
from .config import read_secret
from .errors import ConnectionLost
from .remote import Job, RemoteTask
from .tls import client_tls
from .workers.link import DEFAULT_BACKOFF, Link


class EasyJobsClient:
    """A connection to a manager for callers that are not workers.

    Where the managers are: ``managers=[...]`` (tried in order; on a lost link the client moves
    to the next and re-sends what it was waiting for), or ``host``/``port`` (a list of one), or
    else ``EASYJOBS_MANAGERS``, or else ``EASYJOBS_HOST``/``EASYJOBS_PORT``, or else
    127.0.0.1:8220. ``secret``: the manager's secret or a credential token; left out, it is
    read from ``EASYJOBS_SECRET_FILE`` or ``EASYJOBS_SECRET``. ``tls``, ``ca_file``, ``client_cert``
    and ``client_key`` are those of ``EasyJobsWorker``. ``connect_timeout``: seconds
    ``connect`` waits for a manager. ``request_timeout``: seconds a request (``submit``,
    ``job``, ``cancel``, ``jobs``, ``schedules``) waits while the link is down before it fails
    with ``ConnectionLost`` (None: wait for the link to come back).
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        secret: str | bytes | None = None,
        *,
        managers: str | Sequence[str] | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        name: str | None = None,
        backoff: Callable[[int], float] = DEFAULT_BACKOFF,
        connect_timeout: float = 10.0,
        request_timeout: float | None = 30.0,
    ) -> None:
        key = read_secret(secret, option="secret=")
        addresses = resolve_managers(managers, host, port, tls=tls, pair="host/port")
        self._link = Link(addresses, key, role="client", name=name, backoff=backoff,
                          request_timeout=request_timeout,
                          tls=client_tls(addresses, ca_file=ca_file, client_cert=client_cert,
                                         client_key=client_key))
        self._connect_timeout = connect_timeout

    @property
    def address(self) -> str:
        """The ``host:port`` of the manager connected to (or being tried)."""
        return self._link.address

    @property
    def managers(self) -> tuple[ManagerAddress, ...]:
        """The managers the client tries, in order."""
        return self._link.managers

    async def connect(self) -> None:
        """Connect; ``ConnectionLost`` if no manager answered within ``connect_timeout``,
        ``AuthenticationError`` if the manager refuses the secret."""
        await self._link.start(self._connect_timeout)
        if not self._link.is_open:
            await self._link.close()
            raise ConnectionLost(
                f"no manager answered at {describe(self._link.managers)} within "
                f"{self._connect_timeout:g}s; check that `easyjobs manager` is running there "
                "and that the host and port are right")

    async def close(self) -> None:
        """Disconnect; calls still waiting fail with ``ConnectionLost``."""
        await self._link.close()

    async def __aenter__(self) -> EasyJobsClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, queue: str, task: str, /, *args: Any, **kwargs: Any) -> Any:
        """Run ``task`` with these arguments on some worker and return its result."""
        return await self._link.calls.call(queue, task, args, kwargs)

    async def submit(self, queue: str, task: str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Queue a job and return its handle once the manager has committed it."""
        return await self._link.calls.submit(queue, task, args, kwargs)

    async def result(self, job_id: str, timeout: float | None = None) -> Any:
        """The result of a job submitted earlier (by anyone), pushed when it is ready."""
        return await self._link.calls.result(job_id, timeout)

    async def job(self, job_id: str) -> dict[str, Any]:
        """The job's record: status, attempts, worker, timestamps, result or error."""
        return await self._link.calls.lookup(job_id)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job that has not finished; returns its record afterwards."""
        return await self._link.calls.cancel(job_id)

    async def jobs(
        self,
        *,
        queue: str | None = None,
        task: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Recent jobs, newest first (with workflow links), and the cursor for the next page."""
        return await self._link.calls.list_jobs(
            queue=queue, task=task, status=status, limit=limit, before=before)

    async def schedules(self) -> list[dict[str, Any]]:
        """Every cron schedule with its last and next fire times (seconds since the epoch)."""
        return await self._link.calls.schedules()

    def task(self, queue: str, name: str) -> RemoteTask[..., Any]:
        """An awaitable remote function for ``name`` in ``queue``."""
        return RemoteTask(lambda: self._link.calls, queue, name)
