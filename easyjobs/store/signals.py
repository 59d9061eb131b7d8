"""What one manager's commits tell the other managers that share its database: the text of
the notifications, sans I/O (the PostgreSQL store sends and hears them).

A write transaction sends at most one notification, on the store's channel, with one line per
kind of news:

    ready [["<queue>","<task>"],...]   queued jobs of these tasks were left free in the store
    done ["<id>",...]                  these jobs finished (their watchers re-read them)
    cancelled ["<id>",...]             of those, the cancelled (a manager holding one drops it)
    tasks                              task specs were saved
    credentials                        named credentials were added or revoked
    workers                            a manager's address or the tasks its workers serve
    pause <0|1>                        every worker to be paused (1) or resumed (0)
    from <manager id>                  who sent it (a manager skips its own news)
    outcome <token> <token> ...        of the done, outcomes carried whole (last, optional)

Lists are JSON, so any id or name is carried as it is. An outcome token is the base64 of the
msgpack array ``[id, status, result, error]``: a watcher on another manager gets the result
from the notification instead of re-reading the job. Only the store knows which of a
transaction's outcomes it really wrote (the first outcome of a job wins), so it picks the
tokens it appends in the transaction itself; a done job without a token is re-read.

PostgreSQL caps a payload at 8000 bytes: a list that does not fit becomes ``*``, which tells
the listener to check everything of that kind; outcomes that do not fit are left out.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

import msgpack

Key = tuple[str, str]

MAX_PAYLOAD = 7999
"""Bytes of payload PostgreSQL accepts (less than 8000)."""
ALL = "*"
OUTCOME_PREFIX = "\noutcome "
"""What precedes the outcome tokens (space-separated) at the end of a payload."""
Outcome = tuple[str, Any, "dict[str, str] | None"]
"""A finished job's status, result and error."""


@dataclass(slots=True)
class Signals:
    """The news of one or more transactions; empty when there is nothing to tell."""

    ready: set[Key] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    """Of the done jobs, the outcomes known whole (the rest are re-read)."""
    tasks: bool = False
    credentials: bool = False
    workers: bool = False
    """A manager's entry in the directory changed (``Store.directory``)."""
    pause: bool | None = None
    origin: str | None = None
    all_ready: bool = False
    """Too many keys to list: every task may have free queued jobs."""
    all_done: bool = False
    """Too many ids to list: any watched job may have finished."""
    all_cancelled: bool = False
    """Too many ids to list: any held job may have been cancelled."""

    def __bool__(self) -> bool:
        return bool(self.ready or self.done or self.cancelled or self.tasks or self.credentials
                    or self.workers or self.pause is not None or self.all_ready or self.all_done
                    or self.all_cancelled)

    def merge(self, other: Signals) -> None:
        """Add ``other``'s news to these (a transaction of several writes)."""
        self.ready |= other.ready
        self.done |= other.done
        self.cancelled |= other.cancelled
        for job_id, outcome in other.outcomes.items():  # the first outcome of a job wins
            self.outcomes.setdefault(job_id, outcome)
        self.tasks = self.tasks or other.tasks
        self.credentials = self.credentials or other.credentials
        self.workers = self.workers or other.workers
        if other.pause is not None:
            self.pause = other.pause
        self.all_ready = self.all_ready or other.all_ready
        self.all_done = self.all_done or other.all_done
        self.all_cancelled = self.all_cancelled or other.all_cancelled

    def encode(self) -> str:
        """The payload; lists that would overflow ``MAX_PAYLOAD`` are sent as ``*``."""
        lists: dict[str, str] = {}
        for kind, everything, items in (
            ("ready", self.all_ready, sorted([q, t] for q, t in self.ready)),
            ("done", self.all_done, sorted(self.done)),
            ("cancelled", self.all_cancelled, sorted(self.cancelled)),
        ):
            if everything or items:
                lists[kind] = ALL if everything else json.dumps(items, separators=(",", ":"))
        lines = {kind: f"{kind} {items}" for kind, items in lists.items()}
        if self.tasks:
            lines["tasks"] = "tasks"
        if self.credentials:
            lines["credentials"] = "credentials"
        if self.workers:
            lines["workers"] = "workers"
        if self.pause is not None:
            lines["pause"] = f"pause {int(self.pause)}"
        if self.origin is not None:
            lines["from"] = f"from {self.origin}"
        while len("\n".join(lines.values()).encode()) > MAX_PAYLOAD:
            longest = max(lists, key=lambda kind: len(lists[kind]))
            lists[longest] = ALL
            lines[longest] = f"{longest} {ALL}"
        return "\n".join(lines.values())

    def tokens(self, room: int) -> list[tuple[str, str, str]]:
        """The outcomes to carry, as ``(id, status, token)``: as many as fit ``room`` bytes
        with ``OUTCOME_PREFIX`` and a space between tokens (an outcome may be too big alone)."""
        carried: list[tuple[str, str, str]] = []
        room -= len(OUTCOME_PREFIX) - 1  # the first token needs no space before it
        for job_id in sorted(self.outcomes):
            status, result, error = self.outcomes[job_id]
            try:
                packed = msgpack.packb([job_id, status, result, error], use_bin_type=True)
            except (TypeError, ValueError, OverflowError):
                continue  # the store refuses it anyway
            token = base64.b64encode(packed).decode()
            if len(token) + 1 <= room:
                carried.append((job_id, status, token))
                room -= len(token) + 1
        return carried

    @staticmethod
    def origin_of(payload: str) -> str | None:
        """Who sent ``payload``, read without decoding the rest (its outcomes above all), so
        that a manager skips its own news cheaply."""
        for line in reversed(payload.split(OUTCOME_PREFIX, 1)[0].split("\n")):
            kind, _, rest = line.partition(" ")
            if kind == "from":
                return rest or None
        return None

    @classmethod
    def decode(cls, payload: str) -> Signals:
        """The news in a payload. Lines of a kind it does not know (a newer manager may send
        more) and malformed ones are skipped."""
        signals = cls()
        for line in payload.split("\n"):
            kind, _, rest = line.partition(" ")
            if kind == "tasks":
                signals.tasks = True
            elif kind == "credentials":
                signals.credentials = True
            elif kind == "workers":
                signals.workers = True
            elif kind == "pause" and rest in ("0", "1"):
                signals.pause = rest == "1"
            elif kind == "from" and rest:
                signals.origin = rest
            elif kind == "outcome":
                for token in rest.split(" "):
                    _decode_outcome(token, signals.outcomes)
            elif kind in ("ready", "done", "cancelled"):
                if rest == ALL:
                    setattr(signals, f"all_{kind}", True)
                    continue
                try:
                    items = json.loads(rest)
                except ValueError:
                    continue
                if not isinstance(items, list):
                    continue
                if kind == "ready":
                    signals.ready.update(
                        (item[0], item[1]) for item in items
                        if isinstance(item, list) and len(item) == 2
                        and all(isinstance(part, str) for part in item))
                else:
                    getattr(signals, kind).update(item for item in items if isinstance(item, str))
        return signals


def _decode_outcome(token: str, outcomes: dict[str, Outcome]) -> None:
    """Add the outcome in ``token`` to ``outcomes``; a malformed one is skipped."""
    try:
        item = msgpack.unpackb(base64.b64decode(token, validate=True), raw=False,
                               strict_map_key=False)
    except (binascii.Error, ValueError, TypeError, msgpack.UnpackException):
        return
    if not (isinstance(item, list) and len(item) == 4 and isinstance(item[0], str)
            and isinstance(item[1], str)):
        return
    error = item[3]
    if error is not None and not (isinstance(error, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in error.items())):
        return
    outcomes[item[0]] = (item[1], item[2], error)
