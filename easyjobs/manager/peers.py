"""Who is connected: the peer interface, the registry of connected peers, and replies to them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from ..errors import EasyJobsError, SerializationError, StoreError
from ..jobs import JobStatus
from ..protocol.frames import Error, Frame, Result
from .access import MANAGER, Grant

log = logging.getLogger("easyjobs.manager")

MAX_READS_PER_PEER = 4
"""How many of one peer's lookups and listings read the store at once."""


class Peer:
    """One party connected to the manager; subclasses say how frames reach it.

    ``send`` must never call back into the manager: a peer that has to be dropped while sending
    schedules its own disconnect.
    """

    def __init__(self, peer_id: str, name: str, role: str) -> None:
        self.id = peer_id
        self.name = name
        self.role = role
        self.watching: set[str] = set()
        self.reads = asyncio.Semaphore(MAX_READS_PER_PEER)
        """Store reads done for this peer at once; more wait their turn (memory stays bounded)."""
        self.grant: Grant = MANAGER
        """What its credential allows (``access``); the manager's own peers hold the secret."""
        self.local = False
        """True for the manager's own loopback, which metrics do not count as a worker."""

    def send(self, frame: Frame) -> None:
        raise NotImplementedError

    def close(self, code: int, error: EasyJobsError) -> None:
        """End the link because of ``error`` (the peer is told, then closed with ``code``)."""
        raise NotImplementedError


class Peers:
    """The connected peers by id, when each connected, and replies that cannot fail."""

    def __init__(self) -> None:
        self.by_id: dict[str, Peer] = {}
        self.connected_at: dict[str, float] = {}

    def add(self, peer: Peer) -> None:
        self.by_id[peer.id] = peer
        self.connected_at[peer.id] = time.time()

    def remove(self, peer: Peer) -> bool:
        """Forget the peer; False if it was already gone (disconnects are handled once)."""
        if self.by_id.pop(peer.id, None) is None:
            return False
        self.connected_at.pop(peer.id, None)
        return True

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self.by_id

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[str]:
        """The ids of the connected peers."""
        return iter(self.by_id)

    def get(self, peer_id: str | None) -> Peer | None:
        return self.by_id.get(peer_id) if peer_id is not None else None

    def reply(self, peer: Peer, frame: Frame) -> None:
        """Send ``frame`` to a peer still connected; one too big for a frame becomes a
        ``serialization_error`` instead.

        (A job record can outgrow the limit: its arguments and its result are each within it.)
        """
        if peer.id not in self.by_id:
            return
        try:
            peer.send(frame)
        except SerializationError as exc:
            log.warning("a %s frame for %s was too big to send: %s", frame.type, peer.name, exc)
            if isinstance(frame, Result):
                self.reply(peer, Result(frame.job, JobStatus.FAILED.value, None, {
                    "type": "SerializationError", "traceback": "",
                    "message": f"the outcome of job {frame.job} is too big to send: {exc}"}))
            else:
                self.reply(peer, Error(exc.code, str(exc), getattr(frame, "ref", None)))

    def store_failed(self, peer: Peer, ref: int | None, reason: str | None = None) -> None:
        """Tell a peer its request failed in the store: ``reason`` (written to be shown) or,
        without one, a pointer to this manager's log, where the cause is."""
        self.reply(peer, Error(StoreError.code,
                               reason or "the job store failed; see the manager's log", ref))
