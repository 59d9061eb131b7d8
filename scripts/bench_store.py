"""Measure a store alone: add_jobs throughput and latency, finish with a run_after child, and
list_jobs pages (newest first, filtered, walked by cursor) over the jobs those made.

Usage: python scripts/bench_store.py [--db postgresql://...] [--scale F]   (prints one JSON object)

Without ``--db``, SQLite in a temporary file (synchronous NORMAL, then FULL). With a PostgreSQL
URL, a fresh schema of that database, dropped after. ``--scale`` multiplies the job counts
(e.g. 0.1 for a quick check).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from easyjobs.jobs import JobRecord, JobStatus, new_job_id
from easyjobs.store import PostgresStore, SQLiteStore

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


async def measure(store: SQLiteStore | PostgresStore, scale: float) -> dict[str, Any]:
    concurrent, sequential = max(1, int(CONCURRENT * scale)), max(1, int(SEQUENTIAL * scale))
    finishes, pages = max(1, int(FINISHES * scale)), max(1, int(PAGES * scale))
    await store.open()
    try:
        jobs = [make_job(n) for n in range(concurrent)]
        commits = store.commits
        start = time.perf_counter()
        await asyncio.gather(*(store.add_jobs([job]) for job in jobs))
        elapsed = time.perf_counter() - start
        concurrent_commits = store.commits - commits

        latencies = []
        for n in range(sequential):
            job = make_job(n)
            start = time.perf_counter()
            await store.add_jobs([job])
            latencies.append(time.perf_counter() - start)

        # Each outcome inserts one child in its transaction, as a run_after chain does.
        parents = jobs[:finishes]
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
        for _ in range(pages):
            start = time.perf_counter()
            page = await store.list_jobs(status=JobStatus.QUEUED, limit=50, before=before)
            page_latencies.append(time.perf_counter() - start)
            before = page[-1].id
    finally:
        await store.close()
    return {
        "concurrent_jobs_per_s": round(concurrent / elapsed),
        "concurrent_transactions": concurrent_commits,
        "sequential_median_ms": round(statistics.median(latencies) * 1000, 3),
        "finish_with_child_per_s": round(finishes / finish_elapsed),
        "list_page_median_ms": round(statistics.median(page_latencies) * 1000, 3),
    }


async def measure_postgres(url: str, scale: float) -> dict[str, Any]:
    """Measure PostgreSQL in a schema of its own, dropped afterwards."""
    import psycopg

    schema = f"ej_bench_{new_job_id()[-12:]}"
    with psycopg.connect(url, autocommit=True) as admin:
        version = admin.info.server_version
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            separator = "&" if "?" in url else "?"
            store = PostgresStore(f"{url}{separator}options=-csearch_path%3D{schema}")
            return {"postgresql": version, "default": await measure(store, scale)}
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="a postgresql:// URL (default: SQLite in a temporary file)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the job counts")
    args = parser.parse_args()
    report: dict[str, Any]
    if args.db:
        report = await measure_postgres(args.db, args.scale)
    else:
        report = {"sqlite": sqlite3.sqlite_version}
        with tempfile.TemporaryDirectory() as tmp:
            for synchronous in ("NORMAL", "FULL"):
                path = str(Path(tmp) / f"{synchronous}.db")
                store = SQLiteStore(path, synchronous=synchronous)
                report[synchronous] = await measure(store, args.scale)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
