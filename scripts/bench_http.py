"""Benchmark of the HTTP API: a real manager process and a real worker process; prints JSON.

    python scripts/bench_http.py [--jobs 5000] [--clients 4] [--calls 300]

(a) submit throughput: ``--jobs`` POSTs of ``/bench/task/noop`` without ``?wait``, spread over
    ``--clients`` concurrent httpx clients (one keep-alive connection each), from the first
    request to the last 202; then the time until every result has been read back with
    ``GET /jobs/{id}/result`` by the same clients;
(b) ``?wait`` round trip: ``--calls`` sequential ``POST /bench/task/noop?wait=10`` (p50/p90/p99
    ms), each answered with the result.

The worker is ``scripts/bench.py``'s (queue ``bench``, max_tasks_per_worker=100). The bearer
token is the manager secret, passed to the manager in its environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import SECRET, pct, running_mesh  # noqa: E402

HEADERS = {"Authorization": f"Bearer {SECRET}"}


async def measure(port: int, jobs: int, clients: int, calls: int) -> dict[str, object]:
    base = f"http://127.0.0.1:{port}"
    limits = httpx.Limits(max_connections=1)
    sessions = [httpx.AsyncClient(base_url=base, headers=HEADERS, limits=limits, timeout=30)
                for _ in range(clients)]
    try:
        first = sessions[0]
        for _ in range(100):  # wait for the worker to register
            if (await first.post("/bench/task/noop", json={"x": 0})).status_code == 202:
                break
            await asyncio.sleep(0.1)
        for i in range(50):  # warm up
            assert (await first.post("/bench/task/noop?wait=10", json={"x": i})).status_code == 200

        latencies = []
        for i in range(calls):
            t0 = time.perf_counter()
            response = await first.post("/bench/task/noop?wait=10", json={"x": i})
            latencies.append(time.perf_counter() - t0)
            assert response.status_code == 200 and response.json()["result"] == i

        async def submit(session: httpx.AsyncClient, count: int) -> list[str]:
            ids = []
            for i in range(count):
                response = await session.post("/bench/task/noop", json={"x": i})
                assert response.status_code == 202, response.text
                ids.append(response.json()["job_id"])
            return ids

        shares = [jobs // clients + (i < jobs % clients) for i in range(clients)]
        t0 = time.perf_counter()
        pairs = zip(sessions, shares, strict=True)
        submitted = await asyncio.gather(*(submit(session, n) for session, n in pairs))
        elapsed = time.perf_counter() - t0

        async def read_back(session: httpx.AsyncClient, ids: list[str]) -> None:
            for job_id in ids:
                response = await session.get(f"/jobs/{job_id}/result?timeout=60")
                assert response.status_code == 200, response.text

        pairs_back = zip(sessions, submitted, strict=True)
        await asyncio.gather(*(read_back(session, ids) for session, ids in pairs_back))
        drained = time.perf_counter() - t0
    finally:
        for session in sessions:
            await session.aclose()
    return {
        "submit_per_s": round(jobs / elapsed, 1),
        "submit_jobs": jobs,
        "submit_clients": clients,
        "submit_and_read_every_result_s": round(drained, 3),
        "wait_roundtrip_ms": {"p50": pct(latencies, 0.5), "p90": pct(latencies, 0.9),
                              "p99": pct(latencies, 0.99), "calls": calls},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with running_mesh() as port:
        report = asyncio.run(measure(port, args.jobs, args.clients, args.calls))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
