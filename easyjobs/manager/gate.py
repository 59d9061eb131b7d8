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

from ..errors import StoreError
from ..protocol.frames import (
    Cancel,
    Done,
    Error,
    Frame,
    ListJobs,
    Lookup,
    Pause,
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
        that one and the rest wait for the read."""
        allowed: list[Frame] = []
        for n, frame in enumerate(frames):
            unread = [job for job in _jobs_of(frame) if job not in self._active]
            if unread:
                self._route(peer, allowed)
                self._waiting[peer.id] = deque([frames[n:]])
                self._background.spawn(self._read_then_admit(peer, unread))
                return
            if self._allows(peer, frame, {}):
                allowed.append(frame)
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
        self._route(peer, [f for f in first[:1] if self._allows(peer, f, queues, missing)])
        rest = [first[1:], *waiting]
        for frames in rest:
            if peer.id in self._waiting:  # another read began: the rest wait for it
                self._waiting[peer.id].append(frames)
            elif peer.id in self._peers:
                self._admit(peer, frames)

    def _allows(self, peer: Peer, frame: Frame, read: dict[str, str],
                missing: frozenset[str] | set[str] = frozenset()) -> bool:
        """Whether ``frame`` may go on; if not, the peer is told (or, for a register, closed).

        ``read`` holds the queues of jobs read from the store; a job in ``missing`` has no
        row, and its frame goes on to be answered ``unknown_job`` as for anyone.
        """
        grant = peer.grant
        action = ""
        if isinstance(frame, Register):
            refused = sorted({t["queue"] for t in frame.tasks if isinstance(t, dict)
                              and isinstance(t.get("queue"), str)
                              and not grant.may_serve(t["queue"])})
            if refused:
                peer.close(CLOSE_PERMISSION_DENIED,
                           grant.denied(f"serve queue {', '.join(map(repr, refused))}"))
                return False
            return True
        if isinstance(frame, Submit):
            held = self._queue_held(frame.job)  # a re-sent submit: its job's queue counts too
            action = next((f"submit to queue {q!r}" for q in (frame.queue, held)
                           if q is not None and not grant.may_use(q)), "")
        elif isinstance(frame, ListJobs):
            named = [q for q in [frame.queue, *(frame.queues or [])] if q is not None]
            action = next((f"list queue {q!r}" for q in named if not grant.may_use(q)), "")
            if not named and grant.role != "client":
                action = "list jobs"
        elif isinstance(frame, Pause):
            action = "" if grant.admin else "pause or resume workers"
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
        if not action:
            return True
        exc = grant.denied(action)
        self._peers.reply(peer, Error(exc.code, str(exc), getattr(frame, "ref", None)))
        return False

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

