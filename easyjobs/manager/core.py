"""The manager's parts wired together, and each incoming frame routed to the part it is for.

Every peer (a WebSocket connection or the manager's own loopback) is a ``Peer``; the I/O layers
call ``connect``, ``handle`` with the frames of one message, and ``disconnect``. The parts:

- ``credentials``: who may do what; ``gate``: each frame of a scoped credential checked;
- ``peers``: who is connected; ``observers``: who is told of changes (metrics, live feed);
- ``registry``: the advertised task specs; ``dispatcher``: which job goes to which worker;
- ``claims``: which queued jobs are held in memory, and refilling them from the store's queue;
- ``lifecycle``: the state machine of the unfinished jobs held here, against the store;
- ``watchers``: who awaits which outcome; ``queries``: read-only views (peers and HTTP API);
- ``health``: whether the store writes (dispatch holds while not); ``lease``: this manager's
  lease in a store several managers share (dispatch holds while it is not known valid);
- ``firing``: cron ticks into jobs; ``background``: continuations and write-behind;
- ``recovery``: start-up; ``cluster``: the news of the managers sharing the store;
  ``forwarding``: submits for tasks served only elsewhere, sent straight to that manager.

Two promises of the protocol hold throughout: a job is ``accepted`` only after it is committed,
and a ``result`` is pushed only after it is committed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from ..errors import AuthenticationError, ConfigurationError, ProtocolError
from ..protocol.frames import (
    Cancel,
    Credit,
    Done,
    Error,
    Frame,
    ListJobs,
    Lookup,
    Pause,
    Register,
    Resume,
    Revoke,
    Schedules,
    Submit,
    Watch,
)
from ..protocol.session import CLOSE_AUTH_FAILED
from ..store import Store
from ..store.signals import Signals
from ..tasks import TaskSpec
from .access import Credentials
from .active import ActiveJobs
from .background import Background
from .claims import Claims
from .cluster import ClusterNews
from .dispatcher import Dispatcher, WorkerState
from .firing import ScheduleFiring
from .forwarding import ForwardCounts, Forwarding
from .gate import Gate
from .health import StoreHealth
from .joblog import JobLog
from .lease import Lease
from .lifecycle import DEFAULT_POLICY, JobPolicy, Lifecycle
from .observers import Observers
from .peers import Peer, Peers
from .queries import Queries
from .recovery import recover
from .registry import TaskRegistry
from .scheduler import Scheduler
from .watchers import Watchers

log = logging.getLogger("easyjobs.manager")

Handler = Callable[[Peer, Any], None]


class Core:
    """One manager's state and rules; I/O layers call ``connect``, ``handle``, ``disconnect``."""

    def __init__(self, store: Store, policy: JobPolicy = DEFAULT_POLICY,
                 secret: bytes = b"") -> None:
        self.id = uuid.uuid4().hex
        """This manager process, as the owner of the jobs it holds in the store."""
        self.store = store
        self.background = Background()
        self.peers = Peers()
        self.observers = Observers([JobLog()])
        self.credentials = Credentials(store, secret)
        self.credentials.on_revoked.append(self._revoked)
        active: ActiveJobs = {}
        self.gate = Gate(active, store, self.peers, self.background, self._route)
        self.scheduler = Scheduler(self._fire_schedule)
        self.registry = TaskRegistry(store, self.background, self.scheduler)
        self.dispatcher = Dispatcher(self._assign)
        self.health = StoreHealth(store, self.dispatcher)
        self.lease = Lease(store, self.id, self.dispatcher,
                           lambda records: self.lifecycle.take_over(records),
                           lambda: self.queries.local_workers())
        self.background.on_store_error = self.health.failed
        forwards = ForwardCounts()
        self.queries = Queries(active, store, self.peers, self.background, self.dispatcher,
                               self.registry, self.scheduler, self.health, self.lease, forwards)
        self.watchers = Watchers(self.peers, self.queries, self.background, store)
        self.claims = Claims(store, self.id, self.dispatcher, self.background, self.health,
                             policy.lookahead,
                             lambda records: self.lifecycle.activate(records, notify=False))
        self.lifecycle = Lifecycle(active, store, self.peers, self.observers, self.dispatcher,
                                   self.registry, self.watchers, self.queries, self.background,
                                   self.health, self.claims, policy)
        self.health.on_writable += [self.lifecycle.store_writable, self.claims.top_up_all]
        self.firing = ScheduleFiring(store, self.registry, self.lifecycle, self.claims)
        self.forwarding = Forwarding(store, self.id, secret, self.peers, self.watchers,
                                     self.background, self.dispatcher, self.lifecycle.submit,
                                     lambda job_id: job_id in active, forwards)
        self.lease.on_renewed.append(self.forwarding.renewed)
        self.news = ClusterNews(store, self.claims, self.watchers, self.lifecycle,
                                self.registry, self.credentials, self.background,
                                self.forwarding,
                                lambda paused: self.toggle_workers(paused, announce=False))
        self._routes: dict[type[Frame], Handler] = {
            Done: self.lifecycle.done,
            Credit: self._credit,
            Revoke: lambda peer, frame: self.dispatcher.revoke(peer.id, frame.n),
            Watch: lambda peer, frame: self.watchers.watch(peer, frame.job, frame.ref),
            Lookup: self.queries.lookup,
            Register: self._register,
            Pause: lambda peer, frame: self.toggle_workers(frame.paused, peer.id),
            Resume: lambda peer, frame: self.lifecycle.resume(peer, frame.jobs),
            Cancel: self.lifecycle.cancel,
            ListJobs: self.queries.list_jobs,
            Schedules: self.queries.schedules,
            Error: self._peer_error,
        }

    @property
    def active(self) -> ActiveJobs:
        """The unfinished jobs held in memory, by id (for tests and recovery checks)."""
        return self.lifecycle.active

    @property
    def tasks(self) -> dict[tuple[str, str], TaskSpec]:
        return self.registry.specs

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the store, take back the unfinished jobs, and start the schedules."""
        await self.store.open()
        await self.credentials.load()
        joined = asyncio.get_running_loop().time()  # take_back makes the lease: trusted since
        await recover(self.store, self.registry, self.lifecycle, self.claims, self.scheduler)
        if await self.store.paused():  # every worker was paused, here or on another manager
            self.dispatcher.pause(None, True)
        self.lease.start(joined)
        await self.store.listen(self.news.heard, self.news.caught_up)
        if self.store.shared and self.forwarding.address is None:
            log.info("this manager advertises no address (--advertise), so the others send "
                     "the jobs of its workers through the database, not directly")
        self.forwarding.served_changed()

    async def stop(self) -> None:
        """Stop the schedules and timers, wait for in-progress store work, close the store."""
        await self.scheduler.stop()
        await self.forwarding.stop()
        self.health.stop()
        self.lifecycle.stop()
        await self.background.drain()
        await self.lease.stop()
        await self.store.close()

    # ------------------------------------------------------------------ peers

    def connect(self, peer: Peer) -> None:
        self.peers.add(peer)
        if peer.role == "worker":
            self.dispatcher.add_worker(peer.id, peer.name)
            self.observers.worker_changed("connected", peer)

    def disconnect(self, peer: Peer) -> None:
        """The peer is gone: drop its watches and requeue what it was running (once)."""
        if not self.peers.remove(peer):
            return
        if peer.role == "worker":
            self.observers.worker_changed("disconnected", peer)
        self.watchers.drop(peer)
        self.lifecycle.worker_left(peer)
        if peer.role == "worker":
            self.forwarding.served_changed()

    def handle(self, peer: Peer, frames: list[Frame]) -> None:
        """Act on the frames of one message, in order, as far as the peer's credential allows
        (``gate``). ``ProtocolError`` closes the peer."""
        self.gate.handle(peer, frames)

    def _route(self, peer: Peer, frames: list[Frame]) -> None:
        """Each frame to its part. Consecutive submits are handled together (their inserts
        share one write). A peer dropped while its message is handled gets nothing more done
        for it."""
        submits: list[Submit] = []
        for frame in frames:
            if isinstance(frame, Submit):
                submits.append(frame)
                continue
            if submits:
                self.lifecycle.submit(peer, submits)
                submits = []
            if peer.id not in self.peers:
                return
            handler = self._routes.get(type(frame))
            if handler is not None:
                handler(peer, frame)
        if submits and peer.id in self.peers:
            # Jobs only another manager's workers serve go there, the rest are handled here;
            # a message that also asks about jobs keeps its order here: none of it goes.
            rest = self.forwarding.take(peer, submits) if len(submits) == len(frames) \
                else submits
            if rest:
                self.lifecycle.submit(peer, rest)

    def toggle_workers(self, pause: bool, worker_id: str | None = None,
                       announce: bool = True) -> None:
        """Pause (no new assignments) or resume all workers, or one. Pausing all workers
        reaches the other managers' workers too (``announce``)."""
        if worker_id is None and announce:
            self.background.write(self.store.announce(Signals(pause=pause)),
                                  "the pause of every manager's workers")
        self.dispatcher.pause(worker_id, pause)
        if not pause:
            self.claims.top_up_all()  # their jobs may wait in the store
        for peer_id in [worker_id] if worker_id else list(self.dispatcher.workers):
            peer = self.peers.get(peer_id)
            if peer is not None:
                self.observers.worker_changed("paused" if pause else "resumed", peer)

    def _revoked(self, names: set[str]) -> None:
        """Credentials were revoked: their links end now (their next hello is refused)."""
        for peer in [p for p in self.peers.by_id.values() if p.grant.credential in names]:
            peer.close(CLOSE_AUTH_FAILED, AuthenticationError(
                f"credential {peer.grant.credential!r} was revoked"))

    # ------------------------------------------------------------------ routes

    def _register(self, peer: Peer, frame: Register) -> None:
        if peer.role != "worker":
            raise ProtocolError("only workers register tasks")
        try:
            specs = self.registry.add(frame.tasks)
        except ConfigurationError as exc:
            self.peers.reply(peer, Error(exc.code, str(exc)))
            return
        if frame.capacity is not None:
            self.dispatcher.workers[peer.id].capacity = frame.capacity
        keys = [(s.queue, s.name) for s in specs]
        self.dispatcher.serve(peer.id, keys)
        for key in keys:  # a reconnecting worker sent its resume before: those jobs are its own
            self.claims.top_up(key)
        self.observers.worker_changed("registered", peer)
        self.forwarding.served_changed()

    def _credit(self, peer: Peer, frame: Credit) -> None:
        """More slots: they may take jobs from the store too (the look-ahead grows with them)."""
        self.dispatcher.grant(peer.id, frame.n)
        worker = self.dispatcher.workers.get(peer.id)  # an assignment may have dropped it
        for key in worker.keys if worker is not None else ():
            self.claims.top_up(key)

    def _peer_error(self, peer: Peer, frame: Error) -> None:
        log.warning("peer %r reported %s: %.200r", peer.name, frame.code[:40], frame.message)

    def _assign(self, worker: WorkerState, job_id: str) -> None:
        self.lifecycle.assign(worker, job_id)

    async def _fire_schedule(self, spec: TaskSpec, tick: float) -> bool:
        return await self.firing.fire(spec, tick)
