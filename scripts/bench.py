"""Benchmark: a real manager process (SQLite on disk) and a real worker process; prints JSON.

    python scripts/bench.py [--jobs 5000] [--calls 300] [--chains 200]

(a) latency of sequential ``await noop(x)`` calls from a client (p50/p90/p99 ms);
(b) throughput of N no-op jobs submitted by one client and run by one worker
    (max_tasks_per_worker=100), from first submit to last result received;
(c) a 3-step chain: a task that awaits three tasks in turn (p50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from easyjobs import EasyJobsClient, EasyJobsWorker  # noqa: E402

SECRET = "bench-secret"


def worker_main(port: int) -> None:
    worker = EasyJobsWorker(None, None, "127.0.0.1", port, SECRET, "bench",
                            max_tasks_per_worker=100)

    @worker.task()
    async def noop(x: int) -> int:
        return x

    @worker.task()
    async def chain(x: int) -> int:
        a = await noop(x)
        b = await noop(a + 1)
        return int(await noop(b + 1))

    async def run() -> None:
        await worker.start()
        await asyncio.Event().wait()

    asyncio.run(run())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


async def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("manager did not start")


async def measure(port: int, jobs: int, calls: int, chains: int) -> dict[str, object]:
    async with EasyJobsClient("127.0.0.1", port, SECRET) as client:
        noop = client.task("bench", "noop")
        chain = client.task("bench", "chain")
        for _ in range(50):  # warm up, and wait for the worker to register
            try:
                await noop(0)
            except Exception:
                await asyncio.sleep(0.1)
        latencies = []
        for i in range(calls):
            t0 = time.perf_counter()
            await noop(i)
            latencies.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        results = await asyncio.gather(*(noop(i) for i in range(jobs)))
        elapsed = time.perf_counter() - t0
        assert results == list(range(jobs))
        chain_times = []
        for i in range(chains):
            t1 = time.perf_counter()
            await chain(i)
            chain_times.append(time.perf_counter() - t1)
    return {
        "roundtrip_ms": {"p50": pct(latencies, 0.5), "p90": pct(latencies, 0.9),
                         "p99": pct(latencies, 0.99), "calls": calls},
        "throughput_jobs_per_s": round(jobs / elapsed, 1),
        "throughput_jobs": jobs,
        "chain3_ms": {"p50": round(statistics.median(chain_times) * 1000, 3),
                      "p90": pct(chain_times, 0.9), "chains": chains},
    }


@contextmanager
def running_mesh() -> Iterator[int]:
    """A manager process (SQLite in a temporary directory) and a worker process with the bench
    tasks; yields the manager's port and stops both afterwards."""
    port = free_port()
    env = {**os.environ, "EASYJOBS_SECRET": SECRET, "EASYJOBS_LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory() as tmp:
        manager = subprocess.Popen(
            [sys.executable, "-m", "easyjobs", "--log-level", "WARNING", "manager",
             "--port", str(port), "--db", str(Path(tmp) / "bench.db")],
            env=env, cwd=HERE.parent)
        worker = None
        try:
            asyncio.run(wait_port(port))
            worker = subprocess.Popen(
                [sys.executable, str(HERE / "bench.py"), "--worker", str(port)], env=env)
            yield port
        finally:
            for proc in (worker, manager):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--chains", type=int, default=200)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker)
        return
    with running_mesh() as port:
        report = asyncio.run(measure(port, args.jobs, args.calls, args.chains))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
