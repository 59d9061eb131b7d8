"""The check every frame of a scoped credential passes before the core acts on it.

A peer under the manager secret (or an admin credential) goes straight through. Any other
peer's frames are checked against its grant (``access.Grant``): queues named in the frame at
once, jobs named by id by their queue, read from memory or, for a job not held here, from the
store. While such a read is under way the peer's later frames wait behind it, so the core sees
them in the order they were sent. A refused frame is answered with ``permission_denied`` (a
refused ``register`` closes the link, 4005: the worker cannot serve) and the rest go on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ..errors import PermissionDenied, StoreError
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
from ..protocol.session import CLOSE_PERMISSION_DENIED
from ..store import Store
from .active import ActiveJobs
from .background import Background
from .peers import Peer, Peers

Route = Callable[[Peer, list[Frame]], None]


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
            self._waiting[peer.id].append(frames)
        else:
            self._admit(peer, frames)

    def _admit(self, peer: Peer, frames: list[Frame]) -> None:
        """Route the frames allowed, up to the first whose job must be read from the store;
        that one and the rest wait for the read. A refusal is answered in its place: after
        the allowed frames before it are routed (runs of them stay together, so consecutive
        submits still share one write)."""
        allowed: list[Frame] = []
        for n, frame in enumerate(frames):
            unread = [job for job in _jobs_of(frame) if job not in self._active]
            if unread:
                self._route(peer, allowed)
                self._waiting[peer.id] = deque([frames[n:]])
                self._background.spawn(self._read_then_admit(peer, unread))
                return
            refusal = self._refusal(peer, frame, {})
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
        first = waiting.popleft()
        refusal = self._refusal(peer, first[0], queues, missing)
        if refusal is None:
            self._route(peer, first[:1])
        else:
            self._refuse(peer, first[0], refusal)
        rest = [first[1:], *waiting]
        for frames in rest:
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
            held = self._queue_held(frame.job)  # a re-sent submit: its job's queue counts too
            action = next((f"submit to queue {q!r}" for q in (frame.queue, held)
                           if q is not None and not grant.may_use(q)), "")
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
    if isinstance(frame, (Watch, Lookup, Cancel, Done)):
        return [frame.job]
    if isinstance(frame, Resume):
        return list(frame.jobs)
    return []

