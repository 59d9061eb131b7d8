"""Fan-out of job and worker changes to whoever watches the manager (metrics, the live feed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..jobs import JobRecord

if TYPE_CHECKING:
    from .peers import Peer


class Observer(Protocol):
    """Told of every job and worker change.

    ``change`` is ``created``, ``started``, ``retrying``, ``requeued`` or ``finished`` for jobs
    (the record holds the new status) and ``connected``, ``registered``, ``disconnected``,
    ``paused`` or ``resumed`` for workers. Called synchronously on the manager's loop:
    observers must be quick.
    """

    def job_changed(self, change: str, record: JobRecord) -> None: ...
    def worker_changed(self, change: str, peer: Peer) -> None: ...


class Observers(list[Observer]):
    """The registered observers; calling ``job_changed``/``worker_changed`` tells them all."""

    def job_changed(self, change: str, record: JobRecord) -> None:
        for observer in self:
            observer.job_changed(change, record)

    def worker_changed(self, change: str, peer: Peer) -> None:
        for observer in self:
            observer.worker_changed(change, peer)
