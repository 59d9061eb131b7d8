"""Messages that say what to do next: each one a newcomer meets, asserted word for word where
the words are the point, with real processes and sockets where the message comes from one."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from easyjobs import (
    AuthenticationError,
    ConfigurationError,
    EasyJobsClient,
    EasyJobsWorker,
    TaskFailed,
)

from .conftest import FAST_BACKOFF, Process, RunningManager
from .processes import finished, run_cli, serving
from .utils import SECRET, TIMEOUT, wait_until

WRONG = "not-the-manager-secret"


def manager_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "easyjobs.manager" and r.levelno == logging.WARNING]


# ------------------------------------------------------------------------------ wrong secret

async def test_wrong_secret_names_the_settings_that_must_match_and_the_manager_logs_the_peer(
    manager: RunningManager, process_factory: Callable[..., Process],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`easyjobs worker` with a wrong secret exits 1 saying which setting must equal which;
    the manager logs the peer's address and name, and neither side shows a secret."""
    caplog.set_level(logging.WARNING, logger="easyjobs.manager")
    proc = process_factory("-m", "easyjobs", "worker", "procs.listed_worker:worker",
                           "--port", str(manager.port), env={"EASYJOBS_SECRET": WRONG})
    assert await finished(proc) == 1
    output = proc.output()
    assert (f"the manager at 127.0.0.1:{manager.port} refused the secret: the worker's "
            "manager_secret= (or its EASYJOBS_SECRET / EASYJOBS_SECRET_FILE) must equal the "
            "manager's EASYJOBS_SECRET, or be a credential token made by `easyjobs "
            "credentials add` on that manager") in output, output
    closing = [m for m in manager_warnings(caplog) if m.startswith("closing connection")]
    assert len(closing) == 1, closing
    assert " from 127.0.0.1:" in closing[0]
    assert closing[0].endswith("(worker 'listed'): authentication failed"), closing[0]
    for text in (output, *closing):
        assert WRONG not in text and SECRET not in text


async def test_an_unknown_credential_token_says_how_to_make_one(
    manager: RunningManager, caplog: pytest.LogCaptureFixture,
) -> None:
    """A token the manager does not know is named (never its key), with the command that
    makes one; the manager logs which credential was claimed."""
    caplog.set_level(logging.WARNING, logger="easyjobs.manager")
    key = base64.urlsafe_b64encode(b"k" * 32).rstrip(b"=").decode()
    client = EasyJobsClient(manager.host, manager.port, f"ej1.ghost.{key}", backoff=FAST_BACKOFF,
                            name="probe")
    with pytest.raises(AuthenticationError) as caught:
        await client.connect()
    assert str(caught.value) == (
        f"the manager at 127.0.0.1:{manager.port} refused credential 'ghost': it is unknown or "
        "revoked there, or was made by a manager with another secret; make a token with "
        "`easyjobs credentials add ghost --role client` on that manager")
    assert key not in str(caught.value)
    await wait_until(lambda: any("(client 'probe' with credential 'ghost')" in m
                                 for m in manager_warnings(caplog)), what="the manager's log")


# ------------------------------------------------------------------------------ workflows

async def test_unregistered_run_after_and_on_failure_targets_are_warned_and_logged(
    manager: RunningManager, worker_factory: Callable[..., EasyJobsWorker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A typo in run_after/on_failure is warned about when the task is advertised, and the
    child that fails for it is logged when it happens; tasks registered one by one, a target
    after the task that names it (as in the original docs), are not warned about."""
    caplog.set_level(logging.WARNING, logger="easyjobs.manager")
    ordered = worker_factory("ORDERED")
    await ordered.start()

    @ordered.task(run_after=["second"], on_failure="second")
    async def first() -> None:
        pass

    specs = manager.manager.core.registry.specs
    await wait_until(lambda: ("ORDERED", "first") in specs, what="first's register")

    @ordered.task()
    async def second() -> None:
        pass

    await wait_until(lambda: ("ORDERED", "second") in specs, what="second's register")
    worker = worker_factory("TYPO")

    @worker.task(run_after=["transfrom"], on_failure="hander")
    async def extract() -> dict[str, int]:
        return {"rows": 3}

    await worker.start()
    await wait_until(lambda: len(manager_warnings(caplog)) >= 2, what="the register warnings")
    assert manager_warnings(caplog) == [
        "task TYPO.extract: its run_after task 'transfrom' is not registered in queue 'TYPO' "
        "(by any worker or the manager) yet; until it is, each success creates a job that "
        "fails with UnknownTask",
        "task TYPO.extract: its on_failure task 'hander' is not registered in queue 'TYPO' "
        "(by any worker or the manager) yet; until it is, its failures go unhandled",
    ]
    job = await worker.calls.submit("TYPO", "extract", (), {})
    assert await job.result(TIMEOUT) == {"rows": 3}
    await wait_until(lambda: any(m.startswith("run_after task 'transfrom' of extract is not "
                                              f"registered; job {job.id}'s child ")
                                 for m in manager_warnings(caplog)), what="the run-time log")
    records, _ = await worker.calls.list_jobs(queue="TYPO", task="transfrom", status=None,
                                              limit=5, before=None)
    assert [(r["status"], r["error"]["type"]) for r in records] == [("failed", "UnknownTask")]


# ------------------------------------------------------------------------------ task options

async def test_a_subprocess_script_that_never_calls_a_subprocess_function_says_how_to_write_it(
    worker_factory: Callable[..., EasyJobsWorker], tmp_path: Path,
) -> None:
    """A script without @subprocess (or without the __main__ guard that calls it) fails its
    job with the skeleton it should follow."""
    (tmp_path / "plain.py").write_text("def work(n):\n    return n\n")
    worker = worker_factory("SCRIPTS")

    @worker.task(subprocess=True, task_dir=str(tmp_path), retry_policy="never")
    async def plain(n: int) -> int:
        return n

    await worker.start()
    with pytest.raises(TaskFailed) as caught:
        await asyncio.wait_for(plain(1), TIMEOUT)
    message = caught.value.message
    assert message.startswith(
        "plain.py exited with code 0 without a result: it must call a function decorated with "
        "@subprocess (from easyjobs.workers.task), under if __name__ == '__main__':"), message
    assert "@subprocess\ndef work(...):" in message and "    work()" in message


def test_an_invalid_cron_says_how_many_fields(worker_factory: Callable[..., EasyJobsWorker],
                                              ) -> None:
    """A bad schedule fails at decoration, saying 5 fields, or 6 with seconds last."""
    worker = worker_factory("CRON")
    with pytest.raises(ConfigurationError) as caught:
        worker.task(schedule="0 9 * *")
    assert str(caught.value) == (
        "schedule '0 9 * *' is not a valid cron expression: write 5 fields (minute hour "
        "day-of-month month day-of-week, e.g. '*/5 * * * *'), or 6 with seconds last")


# ------------------------------------------------------------------------------ the CLI

async def test_a_busy_port_fails_before_listening_and_leaves_no_db_file(tmp_path: Path) -> None:
    """`easyjobs manager` on a port in use: one line naming it, no "listening", no new db."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "new.db"
        ran = await run_cli("manager", "--port", str(port), "--db", str(db), cwd=tmp_path)
    assert ran.code == 2, ran
    assert ran.err == (
        f"easyjobs: the manager cannot listen on 127.0.0.1:{port}: Address already in use; "
        "another process (another manager?) listens there: stop it or pick another --port\n")
    assert not db.exists() and not os.listdir(tmp_path)  # no -wal or -shm file either


def parse_iso(text: str) -> float:
    assert text.endswith("Z"), text
    return datetime.datetime.fromisoformat(text[:-1] + "+00:00").timestamp()


async def test_cli_times_are_iso_8601_utc_and_json_keeps_epoch_seconds(
    manager: RunningManager, worker_factory: Callable[..., EasyJobsWorker],
    client: EasyJobsClient,
) -> None:
    """`easyjobs job` and `easyjobs schedules` print ISO 8601 UTC times; `--json` epoch seconds."""
    worker = worker_factory("TIMES")

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    @worker.task(schedule="0 9 1 1 *")
    async def yearly() -> None:
        pass

    await worker.start()
    job = await client.submit("TIMES", "add", 1, 2)
    assert await job.result(TIMEOUT) == 3
    record = await client.job(job.id)
    port = ["--port", str(manager.port)]
    readable, raw, schedules, raw_schedules = await asyncio.gather(
        run_cli("job", job.id, *port), run_cli("job", job.id, *port, "--json"),
        run_cli("schedules", *port), run_cli("schedules", *port, "--json"))
    for ran in (readable, raw, schedules, raw_schedules):
        assert ran.code == 0, ran
    shown = json.loads(readable.out)
    assert readable.out.startswith('{\n  "id": ')  # indented for reading
    for key in ("created_at", "started_at", "finished_at"):
        assert parse_iso(shown[key]) == pytest.approx(record[key], abs=0.001)
    assert json.loads(raw.out)["created_at"] == record["created_at"]
    entry = {e["task"]: e for e in map(json.loads, schedules.out.splitlines())}["yearly"]
    epoch = {e["task"]: e for e in map(json.loads, raw_schedules.out.splitlines())}["yearly"]
    assert entry["next_fire"].endswith("-01-01T09:00:00.000Z")
    assert parse_iso(entry["next_fire"]) == epoch["next_fire"]
    assert entry["last_fire"] is None


# ------------------------------------------------------------------------------ logging

APP = '''\
from contextlib import asynccontextmanager

from fastapi import FastAPI

import easyjobs
from easyjobs import EasyJobsWorker

easyjobs.configure_logging()
worker = EasyJobsWorker(jobs_queue="EMBEDDED", name="embedded")


@worker.task()
async def add(a: int, b: int) -> int:
    return a + b


@asynccontextmanager
async def lifespan(app: FastAPI):
    async with worker:
        yield


app = FastAPI(lifespan=lifespan)
'''


async def test_configure_logging_shows_connected_lines_under_uvicorn(
    manager: RunningManager, process_factory: Callable[..., Process], tmp_path: Path,
) -> None:
    """A worker embedded in a FastAPI app served by uvicorn says it connected once the app
    calls easyjobs.configure_logging() (uvicorn configures only its own loggers)."""
    (tmp_path / "embedded_app.py").write_text(APP)
    proc = process_factory("-m", "uvicorn", "embedded_app:app", "--port", "0",
                           env={"EASYJOBS_PORT": str(manager.port), "PYTHONPATH": str(tmp_path)})
    await wait_until(lambda: serving(manager, "add", "embedded"), what="the embedded worker")
    await wait_until(lambda: "connected to manager at" in proc.output(), what="its log line")
    assert (f" INFO easyjobs.link: connected to manager at 127.0.0.1:{manager.port} as "
            "embedded") in proc.output()


def test_configure_logging_twice_adds_one_handler_and_keeps_an_apps_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second call only changes the level; with root handlers, easyjobs adds none."""
    import easyjobs

    logger = logging.getLogger("easyjobs")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    easyjobs.configure_logging()
    easyjobs.configure_logging("debug")
    assert len(logger.handlers) == 1 and logger.level == logging.DEBUG
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])
    easyjobs.configure_logging("WARNING")
    assert logger.handlers == [] and logger.level == logging.WARNING

