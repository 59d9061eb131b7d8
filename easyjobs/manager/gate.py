"""The check every frame of a scoped credential passes before the core acts on it.

A peer under the manager secret (or an admin credential) goes straight through. Any other
peer's frames are checked against its grant (``access.Grant``): queues named in the frame at
once, jobs named by id (a submit's too: it may re-use an existing job's id) by their queue,
read from memory or, for jobs not held here, from the store (one read per message). While a
read is under way the peer's later messages wait behind it (at most ``MAX_WAITING``, then the
link closes, 4004), so the core sees them in the order they were sent. A refused frame is
answered with ``permission_denied`` (a refused ``register`` closes the link, 4005: the worker
cannot serve) and the rest go on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ..errors import ConnectionLost, PermissionDenied, StoreError
from ..protocol.frames import (
    Cancel,
    Done,
    Error,
    Frame,
    ListJobs,
    Lookup,
    Register,
    Resume,
    Submit,
    Watch,
)
from ..protocol.session import CLOSE_BACKLOG, CLOSE_PERMISSION_DENIED
from ..store import Store
from .active import ActiveJobs
from .background import Background
from .peers import Peer, Peers

Route = Callable[[Peer, list[Frame]], None]

MAX_WAITING = 100
"""Messages of one peer held while its frames wait for a store read; more close the link."""


class Gate:
    """Lets through what each peer's grant allows, in order; answers the rest."""

    def __init__(self, active: ActiveJobs, store: Store, peers: Peers, background: Background,
                 route: Route) -> None:
        self._active = active
        self._store = store
        self._peers = peers
        self._background = background
        self._route = route
        self._waiting: dict[str, deque[list[Frame]]] = {}
        """Per peer with a read under way: the messages that came after, in order."""

    def handle(self, peer: Peer, frames: list[Frame]) -> None:
        if peer.grant.admin:
            self._route(peer, frames)
        elif peer.id in self._waiting:
            waiting = self._waiting[peer.id]
            if len(waiting) >= MAX_WAITING:  # it sends faster than it can be checked
                peer.close(CLOSE_BACKLOG, ConnectionLost(
                    f"over {MAX_WAITING} messages waiting to be checked"))
                return
            waiting.append(frames)
        else:
            self._admit(peer, frames)

    def _admit(self, peer: Peer, frames: list[Frame]) -> None:
        """Route the frames allowed; if any names a job not held here, the whole message
        waits for one read of all such jobs first."""
        unread = sorted({job for frame in frames for job in _jobs_of(frame)
                         if job not in self._active})
        if unread:
            self._waiting[peer.id] = deque([frames])
            self._background.spawn(self._read_then_admit(peer, unread))
            return
        self._route_allowed(peer, frames, {}, frozenset())

    def _route_allowed(self, peer: Peer, frames: list[Frame], read: dict[str, str],
                       missing: frozenset[str] | set[str]) -> None:
        """Route the allowed frames; a refusal is answered in its place, after the allowed
        frames before it are routed (runs of them stay together, so consecutive submits
        still share one write)."""
        allowed: list[Frame] = []
        for frame in frames:
            refusal = self._refusal(peer, frame, read, missing)
            if refusal is None:
                allowed.append(frame)
                continue
            self._route(peer, allowed)
            allowed = []
            self._refuse(peer, frame, refusal)
        self._route(peer, allowed)

    async def _read_then_admit(self, peer: Peer, job_ids: list[str]) -> None:
        queues: dict[str, str] = {}
        missing: set[str] = set()
        try:
            async with peer.reads:
                queues = {r.id: r.queue for r in await self._store.get_jobs(job_ids)}
            missing = {job for job in job_ids if job not in queues}
        except StoreError:
            pass  # queues unknown: those frames are refused, the peer may ask again
        waiting = self._waiting.pop(peer.id, deque())
        if not waiting or peer.id not in self._peers:
            return
        self._route_allowed(peer, waiting.popleft(), queues, missing)
        for frames in waiting:
            if peer.id in self._waiting:  # another read began: the rest wait for it
                self._waiting[peer.id].append(frames)
            elif peer.id in self._peers:
                self._admit(peer, frames)

    def _refusal(self, peer: Peer, frame: Frame, read: dict[str, str],
                 missing: frozenset[str] | set[str] = frozenset()) -> PermissionDenied | None:
        """Why ``frame`` may not go on (logged), or None if it may.

        ``read`` holds the queues of jobs read from the store; a job in ``missing`` has no
        row, and its frame goes on to be answered ``unknown_job`` as for anyone.
        """
        grant = peer.grant
        action = ""
        if isinstance(frame, Register):
            refused = sorted({t["queue"] for t in frame.tasks if isinstance(t, dict)
                              and isinstance(t.get("queue"), str)
                              and not grant.may_serve(t["queue"])})
            action = f"serve queue {', '.join(map(repr, refused))}" if refused else ""
        elif isinstance(frame, Submit):
            # A re-sent submit names a job that exists: its queue must be the peer's too (an
            # id of another queue's job must neither run nor be awaited under this one).
            known = read.get(frame.job) or self._queue_held(frame.job)
            if not grant.may_use(frame.queue):
                action = f"submit to queue {frame.queue!r}"
            elif frame.job not in missing and known is None:
                action = f"submit job {frame.job} (its queue could not be read)"
            elif known is not None and not grant.may_use(known):
                action = f"submit to queue {known!r}"
        elif isinstance(frame, ListJobs):
            named = [q for q in [frame.queue, *(frame.queues or [])] if q is not None]
            action = next((f"list queue {q!r}" for q in named if not grant.may_use(q)), "")
            if not named and grant.role != "client":
                action = "list jobs"
        else:
            for job in _jobs_of(frame):
                if job in missing:
                    continue
                queue = read.get(job) or self._queue_held(job)
                allowed = queue is not None and (
                    grant.may_serve(queue) if isinstance(frame, (Done, Resume))
                    else grant.may_use(queue))
                if not allowed:
                    action = f"{frame.type} job {job}" + (
                        f" of queue {queue!r}" if queue else " (its queue could not be read)")
                    break
        return grant.denied(action) if action else None

    def _refuse(self, peer: Peer, frame: Frame, refusal: PermissionDenied) -> None:
        """Tell the peer; a refused register closes the link (the worker cannot serve)."""
        if isinstance(frame, Register):
            peer.close(CLOSE_PERMISSION_DENIED, refusal)
        else:
            self._peers.reply(peer, Error(refusal.code, str(refusal), getattr(frame, "ref", None)))

    def _queue_held(self, job_id: str) -> str | None:
        active = self._active.get(job_id)
        return active.record.queue if active is not None else None


def _jobs_of(frame: Frame) -> list[str]:
    """The jobs a frame acts on by id."""
    if isinstance(frame, (Watch, Lookup, Cancel, Done, Submit)):
        return [frame.job]
    if isinstance(frame, Resume):
        return list(frame.jobs)
    return []

