"""Grants and the named credentials, on a real SQLite file (no manager, no sockets)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from easyjobs.errors import ConfigurationError, PermissionDenied
from easyjobs.manager.access import LOGGED_REFUSALS, MANAGER, Credentials, Grant
from easyjobs.protocol import auth
from easyjobs.protocol.session import ClientSession, ServerSession, State
from easyjobs.store import SQLiteStore
from easyjobs.store.base import CredentialRecord

SECRET = b"manager-secret-for-access"
ADMIN_TOKEN = b"http-admin-token"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(str(tmp_path / "jobs.db"))
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def credentials(store: SQLiteStore) -> Credentials:
    credentials = Credentials(store, SECRET)
    await credentials.load()
    return credentials


def revocations(credentials: Credentials) -> list[set[str]]:
    """What ``on_revoked`` is told, in order."""
    told: list[set[str]] = []
    credentials.on_revoked.append(told.append)
    return told


def database_bytes(directory: Path) -> bytes:
    """The database file and any journal beside it."""
    return b"".join(path.read_bytes() for path in sorted(directory.glob("jobs.db*")))


# ----------------------------------------------------------------------------- grants

WORKER = Grant("w", "worker", frozenset({"A"}))
CLIENT = Grant("c", "client", frozenset({"A", "B"}))
ADMIN = Grant("ops", "admin", None)


@pytest.mark.parametrize(("grant", "queue", "serve", "use", "covers"), [
    (WORKER, "A", True, False, True),
    (WORKER, "B", False, False, False),
    (CLIENT, "A", False, True, True),
    (CLIENT, "B", False, True, True),
    (CLIENT, "C", False, False, False),
    (ADMIN, "anything", True, True, True),
    (MANAGER, "anything", True, True, True),
])
def test_a_grant_serves_and_uses_its_queues_by_role(grant: Grant, queue: str, serve: bool,
                                                    use: bool, covers: bool) -> None:
    assert (grant.may_serve(queue), grant.may_use(queue), grant.covers(queue)) == (
        serve, use, covers)


@pytest.mark.parametrize(("grant", "roles"), [
    (WORKER, {"worker"}), (CLIENT, {"client"}), (ADMIN, {"worker", "client"}),
    (MANAGER, {"worker", "client"}),
])
def test_a_grant_connects_in_its_own_role_only_unless_admin(grant: Grant, roles: set[str]) -> None:
    assert {role for role in ("worker", "client") if grant.may_connect_as(role)} == roles
    assert grant.admin == (grant.role == "admin")


def test_a_refusal_names_the_credential_and_the_action() -> None:
    refused = CLIENT.denied("submit to queue 'C'")
    assert isinstance(refused, PermissionDenied) and refused.code == "permission_denied"
    assert str(refused) == "credential 'c' (client) may not submit to queue 'C'"
    assert str(MANAGER) == "the manager secret"


# ----------------------------------------------------------------------------- credentials


async def test_an_added_credentials_token_authenticates_with_the_derived_key(
        credentials: Credentials, store: SQLiteStore) -> None:
    """The token's key is derived from the manager secret and the stored salt; a peer
    configured with the token completes a handshake checked with ``key``."""
    token = await credentials.add("etl", "worker", ["B", "A", "A"])
    name, key = auth.split_secret(token.encode())
    [record] = await store.load_credentials()
    assert (name, record.name, record.role, record.queues) == ("etl", "etl", "worker",
                                                               ("A", "B"))
    assert len(record.salt) == auth.SALT_SIZE
    assert key == auth.credential_key(SECRET, "etl", record.salt) == credentials.key("etl")
    assert credentials.grant("etl") == Grant("etl", "worker", frozenset({"A", "B"}))
    assert credentials.grant("") is MANAGER
    assert credentials.key("nobody") is None and credentials.grant("nobody") is None

    server = ServerSession(SECRET, 0.0, nonce=auth.new_nonce(), session_id="s", heartbeat=1.0,
                           max_message=1 << 20, keys=credentials.key)
    client = ClientSession(token.encode(), 0.0, role="worker", name="w", nonce=auth.new_nonce())
    for sender, receiver in ((server, client), (client, server), (server, client)):
        for message in sender.data_to_send(0.0):
            receiver.receive(message, 0.0)
    assert server.state is State.OPEN and client.state is State.OPEN
    assert server.credential == "etl"


async def test_an_admin_credential_covers_every_queue(credentials: Credentials) -> None:
    await credentials.add("ops", "admin", None)
    grant = credentials.grant("ops")
    assert grant == Grant("ops", "admin", None) and grant.admin
    assert credentials.listing() == [{"name": "ops", "role": "admin", "queues": None,
                                      "created_at": credentials.listing()[0]["created_at"]}]


async def test_the_listing_shows_nothing_secret(credentials: Credentials) -> None:
    token = await credentials.add("etl", "client", ["A"])
    [entry] = credentials.listing()
    assert set(entry) == {"name", "role", "queues", "created_at"}
    assert (entry["name"], entry["role"], entry["queues"]) == ("etl", "client", ["A"])
    key = credentials.key("etl")
    assert key is not None and token not in repr(entry) and key.hex() not in repr(entry)


@pytest.mark.parametrize(("name", "role", "queues", "says"), [
    ("", "worker", ["A"], "1 to 64 letters"),
    ("n" * 65, "worker", ["A"], "1 to 64 letters"),
    ("etl.worker", "worker", ["A"], "1 to 64 letters"),
    ("etl worker", "worker", ["A"], "1 to 64 letters"),
    ("etl", "root", ["A"], "role must be one of admin, worker, client, not 'root'"),
    ("etl", "admin", ["A"], "an admin credential covers every queue"),
    ("etl", "worker", None, "a worker credential needs the queues"),
    ("etl", "worker", [], "a worker credential needs the queues"),
    ("etl", "client", None, "a client credential needs the queues"),
    ("etl", "client", ["A", ""], "queues must be non-empty names"),
])
async def test_a_bad_credential_is_refused_saying_why_and_nothing_is_kept(
        credentials: Credentials, store: SQLiteStore, name: str, role: str,
        queues: list[str] | None, says: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        await credentials.add(name, role, queues)
    assert await store.load_credentials() == [] and credentials.listing() == []


async def test_a_taken_name_is_refused_and_the_first_token_stays_valid(
        credentials: Credentials) -> None:
    token = await credentials.add("etl", "worker", ["A"])
    with pytest.raises(ConfigurationError, match="a credential named 'etl' exists"):
        await credentials.add("etl", "client", ["B"])
    assert credentials.bearer(token.encode(), []) == Grant("etl", "worker", frozenset({"A"}))


async def test_bearer_takes_a_credentials_token_or_an_admin_token(
        credentials: Credentials) -> None:
    token = await credentials.add("etl", "client", ["A"])
    name, key = auth.split_secret(token.encode())
    grant = Grant("etl", "client", frozenset({"A"}))
    assert credentials.bearer(token.encode(), [ADMIN_TOKEN]) == grant
    wrong_key = auth.credential_token(name, bytes(len(key))).encode()
    assert credentials.bearer(wrong_key, [ADMIN_TOKEN]) is None
    unknown = auth.credential_token("ghost", key).encode()
    assert credentials.bearer(unknown, [ADMIN_TOKEN]) is None
    assert credentials.bearer(ADMIN_TOKEN, [b"other", ADMIN_TOKEN]) is MANAGER
    assert credentials.bearer(ADMIN_TOKEN, []) is None
    assert credentials.bearer(b"not-a-token", [ADMIN_TOKEN]) is None
    assert credentials.bearer(key, [ADMIN_TOKEN]) is None  # the key alone is no token
    assert credentials.bearer(SECRET, [ADMIN_TOKEN]) is None  # nor the secret, over HTTP


async def test_revoking_tells_the_hooks_and_forgets_the_key(credentials: Credentials,
                                                             store: SQLiteStore) -> None:
    token = await credentials.add("etl", "worker", ["A"])
    await credentials.add("other", "client", ["A"])
    told = revocations(credentials)
    assert await credentials.revoke("etl")
    assert told == [{"etl"}]
    assert credentials.key("etl") is None and credentials.grant("etl") is None
    assert credentials.bearer(token.encode(), []) is None
    assert [r.name for r in await store.load_credentials()] == ["other"]
    assert not await credentials.revoke("etl")
    assert not await credentials.revoke("never")
    assert told == [{"etl"}]
    assert credentials.key("other") is not None


class HeldReads(SQLiteStore):
    """A real store whose next ``load_credentials`` answer (read at once) is held until
    ``release`` is set: a read that overlaps a change made meanwhile."""

    read: asyncio.Event | None = None
    release: asyncio.Event | None = None

    def load_credentials(self) -> asyncio.Future[list[CredentialRecord]]:
        answer = super().load_credentials()
        read, release = self.read, self.release
        if read is None or release is None:
            return answer
        self.read = self.release = None

        async def held() -> list[CredentialRecord]:
            records = await answer
            read.set()
            await release.wait()
            return records

        return asyncio.ensure_future(held())


async def test_a_load_that_overlaps_a_revocation_here_does_not_bring_it_back(
        tmp_path: Path) -> None:
    """A re-read (news from another manager) that read before a revocation made here and
    answers after it is read again: the revoked credential stays revoked."""
    store = HeldReads(str(tmp_path / "jobs.db"))
    await store.open()
    try:
        credentials = Credentials(store, SECRET)
        await credentials.load()
        token = await credentials.add("etl", "worker", ["A"])
        store.read, store.release = read, release = asyncio.Event(), asyncio.Event()
        loading = asyncio.ensure_future(credentials.load())
        await read.wait()  # it has read "etl" as live
        assert await credentials.revoke("etl")
        release.set()
        await loading
        assert credentials.key("etl") is None
        assert credentials.bearer(token.encode(), []) is None
    finally:
        await store.close()


async def test_load_reports_what_another_manager_revoked_or_made_again(
        credentials: Credentials, tmp_path: Path) -> None:
    """Another store on the same file revokes one credential and re-adds another (a new salt):
    ``load`` reports both revoked, forgets the first, and the second's old token is dead."""
    old_token = await credentials.add("etl", "worker", ["A"])
    await credentials.add("gone", "client", ["A"])
    await credentials.add("kept", "client", ["A"])
    told = revocations(credentials)
    other_store = SQLiteStore(str(tmp_path / "jobs.db"))
    await other_store.open()
    try:
        other = Credentials(other_store, SECRET)
        await other.load()
        assert await other.revoke("gone") and await other.revoke("etl")
        new_token = await other.add("etl", "worker", ["A"])
    finally:
        await other_store.close()
    await credentials.load()
    assert told == [{"etl", "gone"}]
    assert credentials.key("gone") is None
    assert credentials.bearer(old_token.encode(), []) is None
    assert credentials.bearer(new_token.encode(), []) == Grant("etl", "worker", frozenset({"A"}))
    await credentials.load()  # nothing changed since: nobody is told
    assert told == [{"etl", "gone"}]


async def test_the_database_never_holds_a_key_or_a_token(credentials: Credentials,
                                                         store: SQLiteStore,
                                                         tmp_path: Path) -> None:
    tokens = [await credentials.add(f"c{n}", "client", ["A"]) for n in range(3)]
    await credentials.revoke("c0")
    await store.close()  # its WAL is checkpointed into the file
    files = database_bytes(tmp_path)
    assert b"c1" in files  # the names are there: the search would find the rest
    for token in tokens:
        name, key = auth.split_secret(token.encode())
        forms: list[Any] = [token.encode(), key, key.hex().encode(),
                            token.rsplit(".", 1)[1].encode()]
        for form in forms:
            assert form not in files, f"{name}: {form!r} is in the database"


def test_a_flood_of_refusals_is_logged_briefly(caplog: pytest.LogCaptureFixture) -> None:
    """A peer sending refused frames in a loop gets a line for each of the first
    ``LOGGED_REFUSALS`` a minute, not one per frame: the log stays readable."""
    grant = Grant("flooder", "client", frozenset({"A"}))
    with caplog.at_level(logging.WARNING, "easyjobs.manager"):
        errors = [grant.denied("submit to queue 'B'") for _ in range(5 * LOGGED_REFUSALS)]
    assert all(isinstance(e, PermissionDenied) for e in errors)  # every refusal is answered
    lines = [r for r in caplog.records if "flooder" in r.getMessage()]
    assert len(lines) == LOGGED_REFUSALS
