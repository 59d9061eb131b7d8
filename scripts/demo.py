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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from easyjobs import EasyJobsClient, TaskFailed  # noqa: E402

SECRET = "abcd1234"  # the secret the docs' example uses


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def say(text: str) -> None:
    print(f"demo | {text}", flush=True)


async def wait_for_worker(client: EasyJobsClient) -> None:
    """Until the worker has registered its tasks (its scheduled ``extract`` shows up)."""
    deadline = time.monotonic() + 30
    while not any(s["task"] == "extract" for s in await client.schedules()):
        if time.monotonic() > deadline:
            raise TimeoutError("the ETL worker did not register within 30 s")
        await asyncio.sleep(0.1)


async def child_of(client: EasyJobsClient, parent: str, task: str) -> dict[str, Any]:
    """The job ``task`` that ``parent`` created (run_after children are created with the
    parent's result, so it exists once the parent's result has arrived)."""
    jobs, _ = await client.jobs(task=task, limit=50)
    return next(job for job in jobs if job["parent"] == parent)


async def calls(port: int) -> None:
    async with EasyJobsClient("127.0.0.1", port, SECRET) as client:
        await wait_for_worker(client)
        schedule = (await client.schedules())[0]
        say(f"schedule: {schedule['task']} '{schedule['schedule']}' next fires at "
            f"{time.strftime('%H:%M:%S', time.gmtime(schedule['next_fire']))} UTC")
        say("worker connected; running the ETL chain: extract -> transform -> load -> compute")
        job = await client.submit("ETL", "extract", url="http://stats")
        say(f"extract(url='http://stats') is job {job.id}")
        say(f"extract -> {await job.result(timeout=30)}")
        parent = job.id
        for task in ("transform", "load", "compute"):
            child = await child_of(client, parent, task)
            if child["dependencies"]:
                say(f"{task} ({child['id']}) waits for run_before jobs {child['dependencies']}")
            result = await client.result(child["id"], timeout=60)
            say(f"{task} ({child['id']}, parent {parent}) -> {result}")
            parent = child["id"]
        say("calling pipeline(), which awaits compute(data={'test': 'data'}) itself")
        say(f"pipeline -> {await client.call('ETL', 'pipeline')}")
        try:
            await client.call("ETL", "transform", data={"a": "not a number"})
        except TaskFailed as exc:
            say(f"transform with bad data failed remotely: {exc.type}: {exc.message}")
        jobs, _ = await client.jobs(limit=30)
        say("the jobs, oldest first (easyjobs jobs shows the same):")
        for record in reversed(jobs):
            say(f"  {record['task']:22} {record['status']:9} attempts={record['attempts']}"
                f" parent={record['parent'] or '-'}")


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
