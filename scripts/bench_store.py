"""Measure the SQLite store: concurrent add_jobs throughput and sequential add_jobs latency.

Usage: python scripts/bench_store.py   (prints one JSON object; uses a temporary file)
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from easyjobs.jobs import JobRecord, new_job_id
from easyjobs.store import SQLiteStore

CONCURRENT = 20_000
SEQUENTIAL = 500


def make_job(n: int) -> JobRecord:
    return JobRecord(
        id=new_job_id(),
        queue="default",
        task="bench",
        args=[n, "x" * 32],
        kwargs={"flag": True},
        created_at=time.time(),
    )


async def measure(path: str, synchronous: str) -> dict[str, Any]:
    store = SQLiteStore(path, synchronous=synchronous)
    await store.open()
    try:
        jobs = [make_job(n) for n in range(CONCURRENT)]
        commits = store.commits
        start = time.perf_counter()
        await asyncio.gather(*(store.add_jobs([job]) for job in jobs))
        elapsed = time.perf_counter() - start
        concurrent_commits = store.commits - commits

        latencies = []
        for n in range(SEQUENTIAL):
            job = make_job(n)
            start = time.perf_counter()
            await store.add_jobs([job])
            latencies.append(time.perf_counter() - start)
    finally:
        await store.close()
    return {
        "concurrent_jobs_per_s": round(CONCURRENT / elapsed),
        "concurrent_transactions": concurrent_commits,
        "sequential_median_ms": round(statistics.median(latencies) * 1000, 3),
    }


async def main() -> None:
    report: dict[str, Any] = {"sqlite": sqlite3.sqlite_version}
    with tempfile.TemporaryDirectory() as tmp:
        for synchronous in ("NORMAL", "FULL"):
            report[synchronous] = await measure(str(Path(tmp) / f"{synchronous}.db"), synchronous)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
