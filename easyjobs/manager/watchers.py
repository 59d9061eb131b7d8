"""Who awaits which job's outcome, and pushing each committed outcome to them."""

from __future__ import annotations

import logging

from ..errors import EasyJobsError
from ..jobs import TERMINAL
from ..protocol.frames import Error, Result
from .active import Active, ActiveJobs
from .background import Background
from .peers import Peer, Peers
from .queries import Queries

log = logging.getLogger("easyjobs.manager")


class Watchers:
    """Watches of unfinished jobs live on their ``Active``; finished jobs answer from the store."""

    def __init__(self, active: ActiveJobs, peers: Peers, queries: Queries,
                 background: Background) -> None:
        self._active = active
        self._peers = peers
        self._queries = queries
        self._background = background

    def watch(self, peer: Peer, job_id: str, ref: int | None) -> None:
        active = self._active.get(job_id)
        if active is not None:
            active.watchers.add(peer)
            peer.watching.add(job_id)
        else:
            self._background.spawn(self._watch_stored(peer, job_id, ref))

    async def _watch_stored(self, peer: Peer, job_id: str, ref: int | None) -> None:
        record = await self._queries.stored(peer, job_id, ref)
        if record is None:
            return
        if record.status in TERMINAL:
            self._peers.reply(peer, Result(record.id, record.status.value, record.result,
                                           record.error))
        elif job_id in self._active:
            self.watch(peer, job_id, ref)
        else:
            log.error("job %s is unfinished in the store but unknown in memory", job_id)
            self._peers.reply(peer, Error(EasyJobsError.code,
                                          "job state is inconsistent; see the manager's log", ref))

    def deliver(self, active: Active, result: Result) -> None:
        """Push a committed outcome to everyone watching the job."""
        for peer in active.watchers:
            peer.watching.discard(result.job)
            self._peers.reply(peer, result)
        active.watchers.clear()

    def reread(self, active: Active) -> None:
        """The job's outcome was decided elsewhere: its watchers get what the store holds."""
        for peer in active.watchers:
            peer.watching.discard(active.record.id)
            self._background.spawn(self._watch_stored(peer, active.record.id, None))
        active.watchers.clear()

    def forget(self, active: Active) -> None:
        """The job was taken back: nobody is told anything about it from memory."""
        for peer in active.watchers:
            peer.watching.discard(active.record.id)
        active.watchers.clear()

    def drop(self, peer: Peer) -> None:
        """The peer is gone: it watches nothing any more."""
        for job_id in peer.watching:
            active = self._active.get(job_id)
            if active is not None:
                active.watchers.discard(peer)
        peer.watching.clear()
