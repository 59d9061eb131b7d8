"""Who awaits which job's outcome, and pushing each committed outcome to them.

Watches are kept by job id, whether or not this manager holds the job in memory: a job waiting
in the store's queue is claimed, run and finished later, and its watchers are told then.
"""

from __future__ import annotations

import asyncio
import logging

from ..errors import StoreError
from ..jobs import TERMINAL, JobStatus
from ..protocol.frames import Result
from ..store import Store
from .background import Background
from .peers import Peer, Peers
from .queries import Queries

log = logging.getLogger("easyjobs.manager")


class Watchers:
    """The peers waiting for each unfinished job's outcome."""

    def __init__(self, peers: Peers, queries: Queries, background: Background,
                 store: Store) -> None:
        self._peers = peers
        self._queries = queries
        self._background = background
        self._store = store
        self._by_job: dict[str, set[Peer]] = {}
        self._rereading: set[str] = set()
        """Watched jobs to re-read from the store at the end of this loop turn."""

    def watch(self, peer: Peer, job_id: str, ref: int | None, *, known: bool = False) -> None:
        """Push the job's outcome to ``peer`` once committed (now, if it already is).

        ``known``: the caller knows the job is unfinished (it holds it, or has just created it
        and checks the insert's answer itself), so the store need not be asked.
        """
        self._by_job.setdefault(job_id, set()).add(peer)
        peer.watching.add(job_id)
        if not known:
            self.check(peer, job_id, ref)

    def check(self, peer: Peer, job_id: str, ref: int | None = None) -> None:
        """Answer ``peer``'s watch from the store if the job has finished (or does not exist).

        The watch is registered first, so an outcome committed meanwhile reaches the peer
        through ``deliver``; the store's answer is then dropped, never sent twice.
        """
        self._background.spawn(self._check_stored(peer, job_id, ref))

    async def _check_stored(self, peer: Peer, job_id: str, ref: int | None) -> None:
        record = await self._queries.stored(peer, job_id, ref)
        if record is not None and not peer.grant.may_use(record.queue):
            # A submit re-using the id of a job of a queue the peer may not see: no outcome.
            self.unwatch(peer, job_id)
            refused = peer.grant.denied(f"await job {job_id} of queue {record.queue!r}")
            self._peers.reply(peer, Result(job_id, JobStatus.FAILED.value, None, {
                "type": "PermissionDenied", "message": str(refused), "traceback": ""}))
            return
        if record is not None and record.status not in TERMINAL:
            return  # its outcome will come through deliver
        if not self.unwatch(peer, job_id) or record is None:
            return  # delivered meanwhile, or the peer was told there is no such job
        self._peers.reply(peer, Result(record.id, record.status.value, record.result,
                                       record.error))

    def of(self, job_id: str) -> frozenset[Peer]:
        """Who watches the job now."""
        return frozenset(self._by_job.get(job_id, ()))

    def deliver(self, result: Result) -> None:
        """Push a committed outcome to everyone watching the job."""
        for peer in self._by_job.pop(result.job, ()):
            peer.watching.discard(result.job)
            self._peers.reply(peer, result)

    def reread_all(self) -> None:
        """Any watched job may have finished elsewhere: its watchers get what the store holds."""
        for job_id in list(self._by_job):
            self.reread(job_id)

    def reread(self, job_id: str) -> None:
        """The job's outcome was decided elsewhere: its watchers get what the store holds.

        The jobs to re-read in one loop turn are read together, in one query.
        """
        if job_id not in self._by_job:
            return
        if not self._rereading:
            asyncio.get_running_loop().call_soon(
                lambda: self._background.spawn(self._reread_pending()))
        self._rereading.add(job_id)

    async def _reread_pending(self) -> None:
        job_ids, self._rereading = self._rereading, set()
        try:
            records = await self._store.get_jobs(sorted(job_ids))
        except StoreError:
            log.warning("could not re-read %d watched job(s); their watchers are told at the "
                        "next news or catch-up", len(job_ids))
            return
        for record in records:
            if record.status in TERMINAL:
                self.deliver(Result(record.id, record.status.value, record.result,
                                    record.error))

    def drop(self, peer: Peer) -> None:
        """The peer is gone: it watches nothing any more."""
        for job_id in peer.watching:
            self.unwatch(peer, job_id, keep_peer=True)
        peer.watching.clear()

    def unwatch(self, peer: Peer, job_id: str, keep_peer: bool = False) -> bool:
        """Stop ``peer`` watching ``job_id``; False if it was not."""
        watchers = self._by_job.get(job_id)
        if watchers is None or peer not in watchers:
            return False
        watchers.discard(peer)
        if not watchers:
            del self._by_job[job_id]
        if not keep_peer:
            peer.watching.discard(job_id)
        return True
