"""Who may do what: the named credentials, their keys, and the grant each peer acts under.

The manager secret is the admin credential. A named credential has a role and the queues it
may use: ``worker`` serves tasks of its queues (and reports their outcomes), ``client``
submits, awaits, looks up, lists and cancels jobs of its queues, ``admin`` does everything on
every queue (pause, credentials). Keys are derived from the manager secret and a salt the store
keeps (``protocol.auth.credential_key``), so the store alone authenticates nobody, and a
revoked name added again gets a new salt: the old token stays dead.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import ConfigurationError, PermissionDenied
from ..protocol import auth
from ..store import Store
from ..store.base import CredentialRecord

log = logging.getLogger("easyjobs.manager")

ROLES = ("admin", "worker", "client")


@dataclass(frozen=True, slots=True)
class Grant:
    """What one credential allows; ``queues`` None for every queue."""

    credential: str
    """Its name; "" for the manager secret (or an API token given to the manager)."""
    role: str
    queues: frozenset[str] | None

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def covers(self, queue: str) -> bool:
        return self.queues is None or queue in self.queues

    def may_serve(self, queue: str) -> bool:
        """Advertise tasks of ``queue``, run its jobs and report their outcomes."""
        return self.role in ("admin", "worker") and self.covers(queue)

    def may_use(self, queue: str) -> bool:
        """Submit, await, look up, list and cancel the jobs of ``queue``."""
        return self.role in ("admin", "client") and self.covers(queue)

    def may_connect_as(self, role: str) -> bool:
        return self.admin or self.role == role

    def __str__(self) -> str:
        return f"credential {self.credential!r} ({self.role})" if self.credential \
            else "the manager secret"

    def denied(self, action: str) -> PermissionDenied:
        """The error for a refused ``action``, logged with the credential's name (never a
        secret): the log says who tried what (``_refusals`` keeps a flood of them short)."""
        if _refusals.allow(self.credential):
            log.warning("refused %s: %s", self, action)
        return PermissionDenied(f"{self} may not {action}")


class _RefusalLog:
    """At most ``LOGGED_REFUSALS`` refusal lines per credential a minute; then one line says
    how many more there were, so a peer sending refused frames in a loop cannot flood the log."""

    def __init__(self) -> None:
        self._window: dict[str, tuple[float, int]] = {}

    def allow(self, credential: str) -> bool:
        now = time.monotonic()
        start, count = self._window.get(credential, (now, 0))
        if now - start >= 60.0:
            if count > LOGGED_REFUSALS:
                log.warning("refused credential %r %d more time(s) in the last minute",
                            credential, count - LOGGED_REFUSALS)
            start, count = now, 0
        self._window[credential] = (start, count + 1)
        return count < LOGGED_REFUSALS


LOGGED_REFUSALS = 20
_refusals = _RefusalLog()


MANAGER = Grant("", "admin", None)


class Credentials:
    """The store's named credentials with their keys, in memory (a hello is checked without a
    read); ``load`` again when another manager says they changed."""

    def __init__(self, store: Store, secret: bytes) -> None:
        self._store = store
        self._secret = secret
        self._known: dict[str, tuple[CredentialRecord, bytes]] = {}
        self._changes = 0
        """Adds and revokes made here so far: a read that overlapped one is not current."""
        self.on_revoked: list[Callable[[set[str]], None]] = []
        """Told the names of credentials revoked (here or elsewhere): their links end."""

    def _revoked(self, names: set[str]) -> None:
        for hook in self.on_revoked:
            hook(names)

    async def load(self) -> None:
        """Read them all; the links of any that went or changed are closed (``revoked``).
        A read that overlapped an add or a revoke made here may predate it: read again."""
        while True:
            changes = self._changes
            records = await self._store.load_credentials()
            if changes == self._changes:
                break
        known = {r.name: (r, auth.credential_key(self._secret, r.name, r.salt)) for r in records}
        gone = {name for name, (record, _) in self._known.items()
                if name not in known or known[name][0] != record}
        self._known = known
        if gone:
            self._revoked(gone)

    def key(self, name: str) -> bytes | None:
        """The key of credential ``name`` (what ``ServerSession`` checks proofs with)."""
        entry = self._known.get(name)
        return entry[1] if entry is not None else None

    def grant(self, name: str) -> Grant | None:
        """What credential ``name`` allows; the manager secret's for ""."""
        if not name:
            return MANAGER
        entry = self._known.get(name)
        if entry is None:
            return None
        record = entry[0]
        return Grant(name, record.role, None if record.queues is None
                     else frozenset(record.queues))

    def bearer(self, token: bytes, admin_tokens: Iterable[bytes]) -> Grant | None:
        """The grant of an HTTP bearer token: a credential's token, or an admin token."""
        name, key = auth.split_secret(token)
        if name:
            known = self.key(name)
            # Compared even when unknown, against itself: the time says nothing either way.
            matched = hmac.compare_digest(known or key, key) and known is not None
            return self.grant(name) if matched else None
        matched = False
        for admin in admin_tokens:  # every token is compared: timing says nothing
            matched |= hmac.compare_digest(token, admin)
        return MANAGER if matched else None

    def listing(self) -> list[dict[str, object]]:
        """Every credential without anything secret: name, role, queues, when made."""
        return [{"name": r.name, "role": r.role,
                 "queues": None if r.queues is None else list(r.queues),
                 "created_at": r.created_at} for r, _ in self._known.values()]

    async def add(self, name: str, role: str, queues: Iterable[str] | None) -> str:
        """Make a credential and return its token: shown once, kept nowhere."""
        if not auth.CREDENTIAL_NAME.fullmatch(name):
            raise ConfigurationError(
                "a credential's name is 1 to 64 letters, digits, '-' or '_'")
        if role not in ROLES:
            raise ConfigurationError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        scope = None if queues is None else tuple(sorted(set(queues)))
        if role == "admin" and scope is not None:
            raise ConfigurationError("an admin credential covers every queue: give no queues")
        if role != "admin" and not scope:
            raise ConfigurationError(f"a {role} credential needs the queues it may use")
        if scope is not None and not all(isinstance(q, str) and q for q in scope):
            raise ConfigurationError("queues must be non-empty names")
        record = CredentialRecord(name, role, scope, os.urandom(auth.SALT_SIZE), time.time())
        self._changes += 1
        if not await self._store.add_credential(record):
            raise ConfigurationError(f"a credential named {name!r} exists; revoke it first")
        key = auth.credential_key(self._secret, name, record.salt)
        self._known[name] = (record, key)
        log.info("credential %r added (%s, queues %s)", name, role,
                 "all" if scope is None else ", ".join(scope))
        return auth.credential_token(name, key)

    async def revoke(self, name: str) -> bool:
        """Forget a credential and close its links at once; False if there was none."""
        self._changes += 1
        found = await self._store.revoke_credential(name)
        if self._known.pop(name, None) is not None or found:
            log.info("credential %r revoked", name)
            self._revoked({name})
        return found
