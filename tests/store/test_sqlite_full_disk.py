"""The SQLite store on a real, small tmpfs: filled, then freed a little."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from easyjobs.jobs import JobRecord, new_job_id
from easyjobs.store import SQLiteStore, StoreUnwritable
from easyjobs.store.sqlite import TIGHT_WAL_PAGES

SECRET = "hunter2-do-not-log"
BALLAST = 256 * 1024


def job(n: int) -> JobRecord:
    """A queued job whose arguments carry a value that must never reach a message."""
    return JobRecord(
        id=new_job_id(), queue="default", task="add", args=[SECRET, "x" * 200], created_at=n
    )


def wal_pages(path: str) -> int:
    """How many 4 KiB pages the WAL file of the database at ``path`` takes."""
    return os.path.getsize(path + "-wal") // 4096


async def test_a_full_disk_fails_clearly_and_recovers_once_space_is_freed(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Filled: StoreUnwritable naming the path, logged once; freed: the probe passes and 200
    more submits succeed, because the WAL gave its space back instead of eating the freed."""
    ballast = small_fs / "ballast"
    ballast.write_bytes(b"\0" * BALLAST)
    path = str(small_fs / "jobs.db")
    store = SQLiteStore(path)
    await store.open()
    try:
        kept = job(0)
        await store.add_jobs([kept])
        with pytest.raises(StoreUnwritable) as caught:
            for n in range(1, 10_000):
                await store.add_jobs([job(n)])
        message = str(caught.value)
        assert message.startswith(f"the job store is full or unwritable ({path}): free disk")
        assert SECRET not in message and caught.value.__cause__ is None
        assert not store.writable and store.last_error == message
        with pytest.raises(StoreUnwritable):
            await store.probe()
        with pytest.raises(StoreUnwritable):
            await store.add_jobs([job(10_001)])
        assert await store.get_job(kept.id) == kept  # reads go on

        ballast.unlink()
        await store.probe()
        assert store.writable and store.last_error is None
        for n in range(200):
            assert await store.add_jobs([job(20_000 + n)]) == [True]
        assert wal_pages(path) <= TIGHT_WAL_PAGES + 16  # one batch past its checkpoint mark
        assert caplog.text.count("cannot write") == 1
        assert caplog.text.count("writable again") == 1
        assert SECRET not in caplog.text
    finally:
        await store.close()

