"""Configuration in one place: workers and clients read the secret and the manager's address
from the same variables as the CLI, and ``easyjobs worker`` takes the same flags."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from easyjobs import ConfigurationError, EasyJobsClient, EasyJobsWorker

from .conftest import FAST_BACKOFF, Process, RunningManager
from .processes import assert_secret_hidden, run_cli, serving
from .utils import SECRET, free_port, wait_until

ADDRESS_VARIABLES = ("EASYJOBS_MANAGERS", "EASYJOBS_HOST", "EASYJOBS_PORT")
SECRET_VARIABLES = ("EASYJOBS_SECRET", "EASYJOBS_SECRET_FILE")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No easyjobs variable from the test's own environment."""
    for name in (*ADDRESS_VARIABLES, *SECRET_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("source", ["EASYJOBS_SECRET", "EASYJOBS_SECRET_FILE"])
async def test_worker_and_client_built_without_settings_read_them_from_the_environment(
    manager: RunningManager, clean_env: pytest.MonkeyPatch, tmp_path: Path, source: str,
) -> None:
    """EASYJOBS_SECRET (or EASYJOBS_SECRET_FILE), EASYJOBS_HOST and EASYJOBS_PORT are all a
    worker and a client need: the quick start keeps its secret out of the source."""
    if source == "EASYJOBS_SECRET":
        clean_env.setenv("EASYJOBS_SECRET", SECRET)
    else:
        (tmp_path / "secret").write_text(SECRET + "\n")
        clean_env.setenv("EASYJOBS_SECRET_FILE", str(tmp_path / "secret"))
    clean_env.setenv("EASYJOBS_HOST", manager.host)
    clean_env.setenv("EASYJOBS_PORT", str(manager.port))
    worker = EasyJobsWorker(jobs_queue="ENV", backoff=FAST_BACKOFF)

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    async with worker, EasyJobsClient(backoff=FAST_BACKOFF) as client:
        assert [str(a) for a in worker.managers] == [f"127.0.0.1:{manager.port}"]
        assert await client.call("ENV", "add", 2, 3) == 5


def test_without_a_secret_the_error_names_the_argument_and_the_variables(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """A worker or client with no secret anywhere says what to pass or set."""
    with pytest.raises(ConfigurationError) as worker_error:
        EasyJobsWorker(jobs_queue="ENV")
    assert str(worker_error.value) == (
        "no secret: set EASYJOBS_SECRET or pass manager_secret= (or name a file in "
        "EASYJOBS_SECRET_FILE)")
    with pytest.raises(ConfigurationError, match=r"or pass secret= \(or name a file"):
        EasyJobsClient()


def test_managers_and_host_port_in_the_environment_at_once_are_refused(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """Two ways of naming the managers at once is a mistake, not a precedence puzzle."""
    clean_env.setenv("EASYJOBS_SECRET", SECRET)
    clean_env.setenv("EASYJOBS_MANAGERS", "127.0.0.1:8220")
    clean_env.setenv("EASYJOBS_PORT", "8221")
    with pytest.raises(ConfigurationError, match="keep EASYJOBS_MANAGERS alone"):
        EasyJobsWorker(jobs_queue="ENV")
    clean_env.setenv("EASYJOBS_PORT", "80x")
    clean_env.delenv("EASYJOBS_MANAGERS")
    with pytest.raises(ConfigurationError, match="EASYJOBS_PORT must be a port number"):
        EasyJobsClient()


async def test_worker_command_takes_host_port_and_secret_file_and_log_level_after_it(
    manager: RunningManager, process_factory: Callable[..., Process], tmp_path: Path,
) -> None:
    """`easyjobs worker M:A --host H --port P --secret-file F --log-level DEBUG`: the flags
    reach a worker built without them, with no EASYJOBS_SECRET, and DEBUG lines appear."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    proc = process_factory("-m", "easyjobs", "worker", "procs.listed_worker:worker",
                           "--host", manager.host, "--port", str(manager.port),
                           "--secret-file", str(secret_file), "--log-level", "DEBUG",
                           env={"EASYJOBS_SECRET": "", "EASYJOBS_PORT": str(free_port())})
    await wait_until(lambda: serving(manager, "add", "listed"), what="the worker to serve")
    async with EasyJobsClient(manager.host, manager.port, SECRET) as client:
        assert await client.call("LISTED", "add", 2, 3) == 5
    await wait_until(lambda: " DEBUG " in proc.output(), what="a DEBUG line")
    assert_secret_hidden(proc)


async def test_global_options_work_after_any_subcommand() -> None:
    """`easyjobs jobs --log-level DEBUG` parses as `easyjobs --log-level DEBUG jobs` does."""
    ran = await run_cli("jobs", "--port", str(free_port()), "--timeout", "0.2",
                        "--log-level", "DEBUG")
    assert ran.code == 1, ran
    assert "unrecognized arguments" not in ran.err
    assert " INFO easyjobs.link: " in ran.err  # a client command logs WARNING and up by default
