"""Measure the SQLite store: add_jobs throughput and latency, finish with a run_after child, and
list_jobs pages (newest first, filtered, walked by cursor) over the jobs those made.

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

from easyjobs.jobs import JobRecord, JobStatus, new_job_id
from easyjobs.store import SQLiteStore

CONCURRENT = 20_000
SEQUENTIAL = 500
FINISHES = 5_000
PAGES = 200


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

        # Each outcome inserts one child in its transaction, as a run_after chain does.
        parents = jobs[:FINISHES]
        start = time.perf_counter()
        await asyncio.gather(
            *(
                store.finish(
                    job.id, JobStatus.SUCCEEDED, {"n": n}, None, time.time(), children=[make_job(n)]
                )
                for n, job in enumerate(parents)
            )
        )
        finish_elapsed = time.perf_counter() - start

        page_latencies = []
        before: str | None = None
        for _ in range(PAGES):
            start = time.perf_counter()
            page = await store.list_jobs(status=JobStatus.QUEUED, limit=50, before=before)
            page_latencies.append(time.perf_counter() - start)
            before = page[-1].id
    finally:
        await store.close()
    return {
        "concurrent_jobs_per_s": round(CONCURRENT / elapsed),
        "concurrent_transactions": concurrent_commits,
        "sequential_median_ms": round(statistics.median(latencies) * 1000, 3),
        "finish_with_child_per_s": round(FINISHES / finish_elapsed),
        "list_page_median_ms": round(statistics.median(page_latencies) * 1000, 3),
    }


async def main() -> None:
    report: dict[str, Any] = {"sqlite": sqlite3.sqlite_version}
    with tempfile.TemporaryDirectory() as tmp:
        for synchronous in ("NORMAL", "FULL"):
            report[synchronous] = await measure(str(Path(tmp) / f"{synchronous}.db"), synchronous)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
