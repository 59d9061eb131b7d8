"""An unfinished job this manager holds in memory (its row's owner), beside its row in the store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..jobs import JobRecord
from ..protocol.frames import DoneAck
from .peers import Peer


@dataclass(slots=True)
class Active:
    """An unfinished job this manager is working on."""

    record: JobRecord
    worker_id: str | None = None
    finishing: bool = False
    """An outcome is being committed: further results for this job are ignored."""
    pending: set[str] = field(default_factory=set)
    """While waiting: the dependencies that have not succeeded yet."""
    timer: asyncio.TimerHandle | None = None
    """While retrying: the timer of the next attempt."""
    cancel_waiters: list[tuple[Peer, int]] = field(default_factory=list)
    """Cancel requests (peer, ref) to answer once the job's final record is committed."""
    acks: list[tuple[Peer, DoneAck]] = field(default_factory=list)
    """``done_ack`` frames owed once the outcome being committed is settled."""


ActiveJobs = dict[str, Active]
"""Unfinished jobs by id."""
