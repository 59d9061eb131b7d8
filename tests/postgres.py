"""PostgreSQL for the tests: the server of ``EASYJOBS_TEST_POSTGRES``, a schema per test.

``scripts/test`` sets ``EASYJOBS_TEST_POSTGRES`` (the machine's server, or a throwaway one it
starts); run directly, pytest tries ``postgresql://postgres@127.0.0.1:5432/test``. A test that
needs PostgreSQL fails, naming the setting, when no server answers: it is never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import psycopg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
LOOPBACK = ("127.0.0.1", "::1", "[::1]", "localhost")


def with_query(url: str, **options: str) -> str:
    """``url`` with libpq ``options`` added to its query string."""
    extra = "&".join(f"{key}={quote(value, safe='')}" for key, value in options.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit admin connection to the test server, checked once per run."""
    url = os.environ.get("EASYJOBS_TEST_POSTGRES") or DEFAULT_URL
    host = urlsplit(url).hostname or ""
    params = psycopg.conninfo.conninfo_to_dict(url)
    socket_dir = str(params.get("host") or "")
    if host not in LOOPBACK and not socket_dir.startswith("/"):
        pytest.fail(f"EASYJOBS_TEST_POSTGRES must point at loopback or a unix socket, not {host}")
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        pytest.fail(
            f"no PostgreSQL for the store tests at {url} ({str(exc).strip().splitlines()[0]});"
            " set EASYJOBS_TEST_POSTGRES to a postgresql:// URL, or run ./scripts/test,"
            " which starts a throwaway server"
        )
    yield conn
    conn.close()


@pytest.fixture
def pg_url(pg_server: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    """A URL whose connections work in a fresh schema of their own, dropped after the test.

    Every connection made from it carries an application_name unique to the test, so a test
    can find (and terminate) exactly its own store's connections.
    """
    name = f"ej_test_{uuid.uuid4().hex[:16]}"
    pg_server.execute(f"CREATE SCHEMA {name}")
    base = os.environ.get("EASYJOBS_TEST_POSTGRES") or DEFAULT_URL
    yield with_query(base, options=f"-csearch_path={name}", application_name=name)
    pg_server.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (name,),
    )
    pg_server.execute(f"DROP SCHEMA {name} CASCADE")


def schema_of(url: str) -> str:
    """The test schema (and application_name) a ``pg_url`` uses."""
    return str(psycopg.conninfo.conninfo_to_dict(url)["application_name"])
