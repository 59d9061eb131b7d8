"""Durable storage for jobs and registered tasks: one abstract ``Store``, one file per backend.

Use ``open_store(url_or_path)`` to pick a backend from configuration; await ``open()`` on the
result before use and ``close()`` on shut-down. ``store/base.py`` says what every backend
promises (call-order writes, read-your-writes, bounded write backlog, health).
"""

from __future__ import annotations

import os

from easyjobs.errors import ConfigurationError
from easyjobs.store.base import LEASE_S, Store, StoreUnwritable
from easyjobs.store.postgres import PostgresStore
from easyjobs.store.sqlite import SQLiteStore

__all__ = ["LEASE_S", "PostgresStore", "SQLiteStore", "Store", "StoreUnwritable", "open_store",
           "store_location"]

DEFAULT_LOCATION = "easyjobs.db"

SUPPORTED = (
    "a file path, sqlite:///path (sqlite:////absolute/path)"
    " or postgresql://user@host:5432/dbname"
)


def store_location(given: str | None = None) -> str:
    """Where the manager's store is: ``given``, else env ``EASYJOBS_DB`` or its older name
    ``DB_PATH``, else ``easyjobs.db`` in the working directory."""
    return (given or os.environ.get("EASYJOBS_DB") or os.environ.get("DB_PATH")
            or DEFAULT_LOCATION)


def open_store(url_or_path: str) -> Store:
    """Make (not yet open) the store ``url_or_path`` names.

    A plain path or ``sqlite:///path`` is an SQLite file; ``postgresql://`` (or
    ``postgres://``) a PostgreSQL database, which needs ``pip install 'easyjobs[postgres]'``.
    Raises ``ConfigurationError`` for anything else. The message names only the URL scheme,
    since a database URL may carry a password.
    """
    scheme, sep, rest = url_or_path.partition("://")
    if not sep:
        if not url_or_path:
            raise ConfigurationError(f"the store location is empty; use {SUPPORTED}")
        return SQLiteStore(url_or_path)
    if scheme == "sqlite":
        # As in SQLAlchemy: what follows the third slash is the path, so four slashes is absolute.
        if not rest.startswith("/") or rest == "/":
            raise ConfigurationError(f"a sqlite store URL needs a path; use {SUPPORTED}")
        return SQLiteStore(rest[1:])
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url_or_path)
    raise ConfigurationError(f"unsupported store scheme {scheme!r}; use {SUPPORTED}")
