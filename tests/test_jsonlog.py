"""JSON log lines (``--log-format json``): every line parses, job lines carry the job's fields,
and no argument, result or secret reaches them."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from easyjobs import EasyJobsClient, EasyJobsWorker
from easyjobs.errors import TaskFailed
from easyjobs.jsonlog import JOB_FIELDS, JsonFormatter

from .conftest import FAST_BACKOFF, Process
from .processes import finished, spawn_manager, wait_listening
from .utils import SECRET, TIMEOUT, free_port

ARGUMENT = "argument-canary-5d2"
RESULT = "result-canary-9f1"


def lines(proc: Process) -> list[dict[str, Any]]:
    """Every line of the process's output, each parsed as one JSON object."""
    return [json.loads(line) for line in proc.output().splitlines()]


async def test_a_manager_run_logs_json_lines_with_job_fields(
    process_factory: Callable[..., Process], tmp_path: Path,
) -> None:
    """A manager with EASYJOBS_LOG_FORMAT=json at DEBUG writes only JSON lines; each job
    change is a line of easyjobs.jobs with job_id, queue, task, attempt and worker; a job that
    fails for good (after its retry) is logged at INFO with its last attempt and worker;
    arguments, results and the secret appear nowhere."""
    port = free_port()
    proc = spawn_manager(process_factory, port, tmp_path / "jobs.db",
                         env={"EASYJOBS_LOG_FORMAT": "json"})
    await wait_listening(proc, port)
    worker = EasyJobsWorker(None, None, "127.0.0.1", port, SECRET, "ETL", name="w-json",
                            backoff=FAST_BACKOFF)

    @worker.task()
    async def echo(text: str) -> str:
        return RESULT

    @worker.task(retry_policy="retry_once")
    async def boom(text: str) -> None:
        raise RuntimeError("boom")

    await worker.start()
    try:
        async with EasyJobsClient("127.0.0.1", port, SECRET) as client:
            assert await client.call("ETL", "echo", ARGUMENT) == RESULT
            failing = await client.submit("ETL", "boom", ARGUMENT)
            with pytest.raises(TaskFailed):
                await failing.result(timeout=TIMEOUT)
    finally:
        await worker.stop(grace=TIMEOUT)
    proc.popen.send_signal(signal.SIGINT)
    assert await finished(proc, TIMEOUT) == 0

    logged = lines(proc)
    assert logged and all({"time", "level", "logger", "message"} <= set(line) for line in logged)
    jobs = [line for line in logged if line["logger"] == "easyjobs.jobs"]
    assert jobs and all(set(JOB_FIELDS) <= set(line) for line in jobs)
    (failed,) = [line for line in jobs if line["job_id"] == failing.id and line["level"] == "INFO"]
    assert failed | {"time": None, "message": None} == {
        "time": None, "message": None, "level": "INFO", "logger": "easyjobs.jobs",
        "job_id": failing.id, "queue": "ETL", "task": "boom", "attempt": 2, "worker": "w-json"}
    changes = [(line["message"].split(") ")[1].split(",")[0], line["attempt"]) for line in jobs
               if line["job_id"] == failing.id]
    assert changes == [("created", 0), ("started", 1), ("retrying", 1), ("requeued", 1),
                       ("started", 2), ("failed", 2)]
    started = [line for line in jobs if line["task"] == "echo" and "started" in line["message"]]
    assert [(line["attempt"], line["worker"]) for line in started] == [(1, "w-json")]
    text = proc.output()
    for hidden in (ARGUMENT, RESULT, SECRET):
        assert hidden not in text


def test_only_the_job_fields_are_copied_from_a_record() -> None:
    """What a caller passes in ``extra`` besides the job fields never reaches the line; an
    exception's traceback goes in ``exception``."""
    record = logging.LogRecord("easyjobs.jobs", logging.INFO, __file__, 1, "job %s", ("j1",),
                               None)
    record.__dict__.update(job_id="j1", queue="Q", task="t", attempt=2, result=RESULT,
                           kwargs={"password": ARGUMENT})
    line = json.loads(JsonFormatter().format(record))
    assert line | {"time": None} == {"time": None, "level": "INFO", "logger": "easyjobs.jobs",
                                     "message": "job j1", "job_id": "j1", "queue": "Q",
                                     "task": "t", "attempt": 2, "worker": None}
    try:
        raise ValueError("bad")
    except ValueError:
        failing = logging.LogRecord("easyjobs", logging.ERROR, __file__, 1, "oops", (),
                                    sys.exc_info())
    line = json.loads(JsonFormatter().format(failing))
    assert "ValueError: bad" in line["exception"] and "job_id" not in line


def test_configure_logging_json_writes_json_lines_for_embedders() -> None:
    """``easyjobs.configure_logging(json=True)`` in a program of one's own (a fresh process,
    nothing configured before): easyjobs' lines reach stderr as JSON, with the job fields."""
    code = ("import logging, easyjobs; easyjobs.configure_logging(json=True); "
            "logging.getLogger('easyjobs.jobs').info('job %s started', 'j9', extra={"
            "'job_id': 'j9', 'queue': 'Q', 'task': 't', 'attempt': 1, 'worker': 'w'})")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=TIMEOUT, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    (line,) = [json.loads(text) for text in ran.stderr.splitlines()]
    assert line | {"time": None} == {"time": None, "level": "INFO", "logger": "easyjobs.jobs",
                                     "message": "job j9 started", "job_id": "j9", "queue": "Q",
                                     "task": "t", "attempt": 1, "worker": "w"}
