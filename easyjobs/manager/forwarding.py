"""Submits for tasks no worker here serves, sent straight to a manager whose workers do.

On a store several managers share, a job whose workers are all on manager B would otherwise
wait for B to hear of it (after this manager's insert commits) and to claim it (B's commit).
Forwarded over a client link to B, it is inserted, held and dispatched by B as if submitted
there, before its insert commits; this manager answers its peer once B has accepted it, and
the outcome comes back as any other, in the store's news. Each manager advertises in the store
(``Store.advertise``) where it is reached and which tasks its workers serve; the others read
that directory when told it changed, and at each lease renewal.

The store's path stays the rule, forwarding only a shortcut: a submit goes the usual way here
when no link to a serving manager is open, when that manager answers with an error, or when it
has not answered within ``ANSWER_TIMEOUT_S`` (the link is then passed over until it answers
again). The insert is idempotent by job id, so a job the other manager did insert is then
found, not doubled. What comes over another manager's link is never forwarded again, so a
submit crosses at most once; a message that also asks something about its jobs (a lookup, a
cancel) is not forwarded at all, so its frames stay in order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..addresses import parse_manager
from ..errors import EasyJobsError, StoreError
from ..protocol.frames import Accepted, Result, Submit
from ..store import Store
from ..store.signals import Signals
from ..tls import client_tls
from ..workers.link import Backoff, Link
from .background import Background
from .dispatcher import Dispatcher, Key
from .peers import Peer, Peers
from .watchers import Watchers

log = logging.getLogger("easyjobs.manager")

LINK_NAME = "easyjobs manager link"
"""The start of the hello name of one manager's link to another."""
ANSWER_TIMEOUT_S = 2.0
"""How long a forwarded submit waits for the other manager's answer (its link down or not)
before it goes the store's way here instead."""
LINK_BACKOFF = Backoff(initial=0.1, maximum=2.0)


@dataclass(slots=True)
class ForwardCounts:
    """Statistics: submits forwarded, and of those the ones that went the store's way here."""

    forwarded: int = 0
    fell_back: int = 0


class Forwarding:
    """Forwards submits to the managers whose workers serve their task, over links it keeps."""

    def __init__(self, store: Store, owner: str, secret: bytes, peers: Peers,
                 watchers: Watchers, background: Background,
                 dispatcher: Dispatcher, local: Callable[[Peer, list[Submit]], None],
                 held: Callable[[str], bool], counts: ForwardCounts) -> None:
        self.address: str | None = None
        """Where the other managers reach this one (``ws://`` or ``wss://``); None: nowhere,
        so none forwards to it (it still forwards to them)."""
        self._store = store
        self._owner = owner
        self._secret = secret
        self._peers = peers
        self._watchers = watchers
        self._background = background
        self._local = local
        self._dispatcher = dispatcher
        self._held = held
        self._routes: dict[Key, list[str]] = {}
        """task -> the other managers whose workers serve it"""
        self._links: dict[str, tuple[str, Link]] = {}
        """manager id -> the address linked to, and the link"""
        self._refused: dict[str, str] = {}
        """manager id -> the address whose link failed for good (not tried again)"""
        self._waiting: dict[str, Result | bool] = {}
        """forwarded job id -> what news of its end came before its answer: nothing (False),
        its outcome, or that it may have ended (True: the store tells)"""
        self._silent: set[str] = set()
        """managers that left a forwarded submit unanswered: passed over until they answer"""
        self._stopped = False
        self._turn = itertools.count()
        self._advertised: list[Key] | None = None
        self._advertising = False
        self._refreshing = False
        self._refresh_again = False
        self._counts = counts

    # ------------------------------------------------------------------ forwarding

    def take(self, peer: Peer, frames: list[Submit]) -> list[Submit]:
        """Forward the submits another manager can take now; returns those to handle here."""
        if not self._routes or self._stopped or peer.name.startswith(LINK_NAME):
            return frames
        rest: list[Submit] = []
        for frame in frames:
            target = self._link_for((frame.queue, frame.task))
            if target is None or self._held(frame.job) or frame.job in self._waiting:
                rest.append(frame)
                continue
            manager, link = target
            try:
                answer = link.calls.request(_renumbered(frame))
            except EasyJobsError:  # too big for that link, or the link has just ended
                rest.append(frame)
                continue
            self._waiting[frame.job] = False
            self._counts.forwarded += 1
            self._background.spawn(self._answered(peer, frame, manager, answer))
        return rest

    def _link_for(self, key: Key) -> tuple[str, Link] | None:
        """An open link to a manager serving ``key`` that answers (in turn among several),
        unless a worker here serves it."""
        managers = self._routes.get(key)
        if not managers or self._dispatcher.serves(key):
            return None
        start = next(self._turn)
        for step in range(len(managers)):
            manager = managers[(start + step) % len(managers)]
            entry = self._links.get(manager)
            if entry is not None and entry[1].is_open and manager not in self._silent:
                return manager, entry[1]
        return None

    async def _answered(self, peer: Peer, frame: Submit, manager: str,
                        answer: asyncio.Future[Accepted]) -> None:
        answer.add_done_callback(lambda done: self._answers(manager, done))
        try:
            accepted = await asyncio.wait_for(asyncio.shield(answer), ANSWER_TIMEOUT_S)
        except (EasyJobsError, asyncio.TimeoutError) as exc:
            if isinstance(exc, asyncio.TimeoutError) and manager not in self._silent:
                self._silent.add(manager)
                log.warning("the manager at %s did not answer a forwarded submit within %gs; "
                            "jobs for its workers go through the database until it does",
                            self._address_of(manager), ANSWER_TIMEOUT_S)
            self._waiting.pop(frame.job, None)
            self._counts.fell_back += 1
            log.debug("a forwarded submit of job %s came back (%s); the store takes it here",
                      frame.job, type(exc).__name__)
            if peer.id in self._peers:
                self._local(peer, [frame])
            return
        heard = self._waiting.pop(frame.job, False)
        if peer.id not in self._peers:
            return
        if not accepted.created:  # another job's id: its outcome only through the checks of a
            heard = True  # watch (the peer's grant may not cover that job's queue)
        if frame.watch and not isinstance(heard, Result):  # before the answer, so that no
            self._watchers.watch(  # outcome can reach the peer before it
                peer, frame.job, None, known=not heard)
        self._peers.reply(peer, Accepted(frame.ref, frame.job, accepted.created))
        if frame.watch and isinstance(heard, Result):
            self._peers.reply(peer, heard)

    def _answers(self, manager: str, answer: asyncio.Future[Accepted]) -> None:
        """A manager that answers (even late) is forwarded to again."""
        if not answer.cancelled() and answer.exception() is None and manager in self._silent:
            self._silent.discard(manager)
            log.info("the manager at %s answers again; jobs for its workers are forwarded "
                     "to it", self._address_of(manager))

    def _address_of(self, manager: str) -> str:
        entry = self._links.get(manager)
        return entry[0] if entry is not None else f"(manager {manager[:8]})"

    def heard(self, news: Signals) -> None:
        """News of jobs that ended: a forwarded job not answered yet keeps its outcome for its
        peer's watch, which comes after this news (or learns to ask the store for it)."""
        if not self._waiting:
            return
        for job_id in list(self._waiting) if news.all_done else news.done & self._waiting.keys():
            outcome = news.outcomes.get(job_id)
            self._waiting[job_id] = True if outcome is None else Result(job_id, *outcome)

    # ------------------------------------------------------------------ the directory

    def served_changed(self) -> None:
        """The tasks this manager's workers serve may have changed: advertise them (once per
        loop turn, however many changes)."""
        if self.address is None or not self._store.shared or self._advertising:
            return
        self._advertising = True
        asyncio.get_running_loop().call_soon(lambda: self._background.spawn(self._advertise()))

    async def _advertise(self) -> None:
        self._advertising = False
        assert self.address is not None
        served = self._dispatcher.served()
        if served == self._advertised:
            return
        self._advertised = None  # until this one is known written
        try:
            await self._store.advertise(self._owner, self.address, served)
        except StoreError:
            log.debug("could not advertise this manager's tasks; trying at the next renewal")
            return
        self._advertised = served

    def renewed(self) -> None:
        """The lease was renewed: read the directory again, and advertise if the last try failed."""
        self.served_changed()
        self.refresh()

    def refresh(self) -> None:
        """Read the directory again soon (one read at a time; one more if asked meanwhile)."""
        if not self._store.shared or self._stopped:
            return
        if self._refreshing:
            self._refresh_again = True
            return
        self._refreshing = True
        self._background.spawn(self._refresh())

    async def _refresh(self) -> None:
        try:
            while True:
                self._refresh_again = False
                try:
                    entries = await self._store.directory(self._owner)
                except StoreError:
                    log.debug("could not read the directory of managers", exc_info=True)
                    return
                if self._stopped:
                    return
                self._update(entries)
                if not self._refresh_again:
                    return
        finally:
            self._refreshing = False

    def _update(self, entries: dict[str, tuple[str, list[Key]]]) -> None:
        routes: dict[Key, list[str]] = {}
        for manager, (address, serves) in entries.items():
            if self._refused.get(manager) == address:
                continue
            linked = self._links.get(manager)
            if linked is not None and linked[0] != address:
                self._close(manager)
                linked = None
            if linked is None and not self._connect(manager, address):
                continue
            for key in serves:
                routes.setdefault(key, []).append(manager)
        for manager in [m for m in self._links if m not in entries]:
            self._close(manager)
        for manager in [m for m in (*self._refused, *self._silent) if m not in entries]:
            self._refused.pop(manager, None)  # gone for good: forgotten
            self._silent.discard(manager)
        self._routes = routes

    def _connect(self, manager: str, address: str) -> bool:
        try:
            target = parse_manager(address)
            link = Link([target], self._secret, role="client", tls=client_tls([target]),
                        name=f"{LINK_NAME} {self._owner[:8]}", backoff=LINK_BACKOFF,
                        request_timeout=ANSWER_TIMEOUT_S, quiet=True,
                        on_failed=lambda exc: self._failed(manager, address, exc))
        except EasyJobsError as exc:
            self._refuse(manager, address, exc)
            return False
        self._links[manager] = (address, link)
        self._background.spawn(self._start(manager, address, link))
        return True

    async def _start(self, manager: str, address: str, link: Link) -> None:
        if self._links.get(manager, (None, None))[1] is not link:
            return  # closed (or replaced) before it started
        try:
            await link.start(connect_timeout=ANSWER_TIMEOUT_S)
        except EasyJobsError:
            return  # on_failed has it
        if not link.is_open and self._links.get(manager, (None, None))[1] is link:
            log.warning("no answer from the manager at %s (its advertised address); jobs for "
                        "its workers go through the database until it answers", address)

    def _failed(self, manager: str, address: str, exc: EasyJobsError) -> None:
        self._refuse(manager, address, exc)
        self._close(manager)
        self._routes = {key: [m for m in managers if m != manager]
                        for key, managers in self._routes.items()}

    def _refuse(self, manager: str, address: str, exc: EasyJobsError) -> None:
        self._refused[manager] = address
        log.warning("cannot link to the manager at %s (%s); jobs for its workers go through "
                    "the database instead", address, exc)

    def _close(self, manager: str) -> None:
        entry = self._links.pop(manager, None)
        if entry is not None:
            self._background.spawn(entry[1].close())

    async def stop(self) -> None:
        """Close every link for good (a submit still waiting for its answer goes the store's
        way); nothing is forwarded or linked afterwards."""
        self._stopped = True
        links = [link for _, link in self._links.values()]
        self._links.clear()
        self._routes = {}
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)


def _renumbered(frame: Submit) -> Callable[[int], Submit]:
    """``frame`` as the link sends it: its own ref, and no watch."""
    return lambda ref: replace(frame, ref=ref, watch=False)
