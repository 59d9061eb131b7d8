"""The demo: a manager on its embedded SQLite store, the docs' ETL worker, and a few calls.

    scripts/demo            (installs what it needs, then runs this file)

Starts ``easyjobs manager`` and ``uvicorn examples.etl:server`` as child processes on free
loopback ports, calls tasks from a client and prints what happens; the worker's own prints
(``extract started`` ...) show the task flow. Everything is stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from easyjobs import EasyJobsClient, TaskFailed, UnknownTask  # noqa: E402

SECRET = "abcd1234"  # the secret the docs' example uses


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def say(text: str) -> None:
    print(f"demo | {text}", flush=True)


async def wait_for_task(client: EasyJobsClient, queue: str, task: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            await client.submit(queue, task, url="warm-up")
            return
        except UnknownTask:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def calls(port: int) -> None:
    async with EasyJobsClient("127.0.0.1", port, SECRET) as client:
        await wait_for_task(client, "ETL", "extract")
        say("worker connected; calling ETL tasks")
        result = await client.call("ETL", "extract", url="http://stats")
        say(f"extract(url='http://stats') -> {result}")
        result = await client.call("ETL", "transform", data=result["data"])
        say(f"transform(...) -> {result}")
        result = await client.call("ETL", "load", data=result["data"])
        say(f"load(...) -> {result}")
        job = await client.submit("ETL", "failure_notify", job_failed="demo failure")
        say(f"submitted failure_notify as job {job.id}; status {await job.status()}")
        say(f"its result: {await job.result(timeout=10)}")
        try:
            await client.call("ETL", "transform", data={"a": "not a number"})
        except TaskFailed as exc:
            say(f"transform with bad data failed remotely: {exc.type}: {exc.message}")
        say(f"job record: {await client.job(job.id)}")


def main() -> None:
    manager_port, worker_port = free_port(), free_port()
    env = {**os.environ, "EASYJOBS_SECRET": SECRET, "EASYJOBS_PORT": str(manager_port),
           "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "easyjobs.db"
        say(f"starting a manager on 127.0.0.1:{manager_port} with SQLite at {db}")
        procs = [subprocess.Popen(
            [sys.executable, "-m", "easyjobs", "manager", "--port", str(manager_port),
             "--db", str(db)], env=env, cwd=ROOT)]
        say(f"starting the ETL worker (examples/etl.py) on 127.0.0.1:{worker_port}")
        procs.append(subprocess.Popen(
            [sys.executable, "-W", "ignore::DeprecationWarning", "-m", "uvicorn",
             "examples.etl:server", "--port", str(worker_port), "--log-level", "warning"],
            env=env, cwd=ROOT))
        try:
            asyncio.run(calls(manager_port))
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(10)
    say("done")


if __name__ == "__main__":
    main()
