"""The ``easyjobs`` command, run as real processes: help, manager, worker and call.

Every child gets the secret through its environment or a file; each test also checks that the
secret shows up in no argv and no output.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from easyjobs import AuthenticationError, EasyJobsClient, EasyJobsWorker, UnknownJob, cli
from easyjobs.errors import ConfigurationError
from easyjobs.workers.link import WS_PATH

from .certs import make_pki
from .conftest import FAST_BACKOFF, Process, RunningManager
from .processes import (
    QUEUE,
    Ran,
    assert_secret_hidden,
    finished,
    handshake,
    run_cli,
    serving,
    spawn_manager,
    spawn_worker,
    wait_listening,
)
from .utils import SECRET, TIMEOUT, free_port, wait_until


def assert_no_secret(ran: Ran, secret: str = SECRET) -> None:
    assert not any(secret in arg for arg in ran.args)
    assert secret not in ran.out and secret not in ran.err


@pytest.fixture
async def etl_worker(worker_factory: Callable[..., EasyJobsWorker]) -> EasyJobsWorker:
    """An in-process worker for queue ETL with tasks that succeed, fail and return bytes."""
    worker = worker_factory("ETL")

    @worker.task()
    async def add(a: int, b: int = 0) -> int:
        return a + b

    @worker.task()
    async def describe(name: str, tags: list[str]) -> dict[str, Any]:
        return {"name": name, "tags": tags, "raw": name.encode()}

    @worker.task()
    async def explode(message: str) -> None:
        raise ValueError(message)

    await worker.start()
    return worker


def call_args(manager: RunningManager, *args: str) -> list[str]:
    return ["call", "--host", manager.host, "--port", str(manager.port), *args]


# ------------------------------------------------------------------------------ help

async def test_help_lists_the_commands_and_their_connection_options() -> None:
    """``python -m easyjobs --help`` works, and ``call --help`` documents host, port and secret."""
    ran = await run_cli("--help")
    assert ran.code == 0, ran.err
    assert all(word in ran.out for word in ("manager", "worker", "call"))
    ran = await run_cli("call", "--help")
    assert ran.code == 0, ran.err
    assert all(word in ran.out for word in ("--host", "--port", "--secret-file", "--no-wait"))


# ------------------------------------------------------------------------------ manager

@pytest.mark.parametrize("secret_file", [None, ""], ids=["no-secret", "empty-secret-file"])
async def test_manager_refuses_to_start_without_a_secret(
    tmp_path: Path, secret_file: str | None,
) -> None:
    """No EASYJOBS_SECRET and no (non-empty) --secret-file: a clear message, non-zero exit."""
    extra: list[str] = []
    if secret_file is not None:
        (tmp_path / "secret").write_text(secret_file)
        extra = ["--secret-file", str(tmp_path / "secret")]
    ran = await run_cli("manager", "--port", str(free_port()), "--db", str(tmp_path / "j.db"),
                        *extra, env={"EASYJOBS_SECRET": "", "EASYJOBS_SECRET_FILE": ""},
                        cwd=tmp_path)
    assert ran.code != 0
    expected = "secret file is empty" if extra else "set EASYJOBS_SECRET or pass --secret-file"
    assert expected in ran.err
    assert "Traceback" not in ran.err
    assert not (tmp_path / "j.db").exists()


async def test_manager_takes_its_secret_from_a_file_and_keeps_it_out_of_argv_and_logs(
    process_factory: Callable[..., Process], tmp_path: Path,
) -> None:
    """--secret-file: peers proving that secret get in, others are refused; SIGTERM closes all."""
    file_secret = "from-a-file-0c1d"
    (tmp_path / "secret").write_text(file_secret + "\n")
    port = free_port()
    proc = spawn_manager(process_factory, port, tmp_path / "j.db",
                         "--secret-file", str(tmp_path / "secret"),
                         env={"EASYJOBS_SECRET": ""})
    await wait_listening(proc, port)
    async with EasyJobsClient("127.0.0.1", port, file_secret, backoff=FAST_BACKOFF) as client:
        with pytest.raises(UnknownJob):
            await client.job("0" * 32)
    with pytest.raises(AuthenticationError):
        await EasyJobsClient("127.0.0.1", port, SECRET, backoff=FAST_BACKOFF).connect()
    assert_secret_hidden(proc, file_secret)

    async with connect(f"ws://127.0.0.1:{port}{WS_PATH}") as ws:
        await handshake(ws, "worker", file_secret)
        proc.popen.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    # uvicorn closes its connections (1012) before the manager's shutdown would send 1001.
    assert closed.value.rcvd is not None and closed.value.rcvd.code in (1001, 1012)
    # uvicorn re-raises the signal once it has shut down, so the exit looks like SIGTERM's.
    assert await finished(proc) in (0, -signal.SIGTERM)
    assert_secret_hidden(proc, file_secret)


async def test_manager_serves_mutual_tls_and_client_commands_use_it(
    process_factory: Callable[..., Process], tmp_path: Path,
) -> None:
    """--ssl-certfile/--ssl-ca-certs/--require-client-cert: `call --managers wss://...
    --ca-file --client-cert` gets its result; without the certificate, or trusting another CA,
    exit 1 with one line naming the manager and the reason."""
    pki = make_pki(tmp_path)
    port = free_port()
    proc = spawn_manager(process_factory, port, tmp_path / "j.db", "--ssl-certfile",
                         str(pki.server), "--ssl-ca-certs", str(pki.ca), "--require-client-cert")
    await wait_listening(proc, port)
    tls = {"ca_file": str(pki.ca), "client_cert": str(pki.client)}
    worker = EasyJobsWorker(manager_secret=SECRET, jobs_queue="ETL", backoff=FAST_BACKOFF,
                            managers=[f"wss://127.0.0.1:{port}"], **tls)

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    await worker.start()
    try:
        ran = await run_cli("call", "--managers", f"wss://127.0.0.1:{port}", "--ca-file",
                            str(pki.ca), "--client-cert", str(pki.client), "ETL", "add",
                            "--args", "[1, 2]")
        assert (ran.code, ran.out) == (0, "3\n"), ran.err
        ran = await run_cli("jobs", "--port", str(port), "--tls", "--ca-file", str(pki.ca))
        assert ran.code == 1, ran
        last = ran.err.splitlines()[-1]
        assert last.startswith(f"easyjobs: TLSError: the manager at 127.0.0.1:{port} ")
        assert "requires a client certificate" in last and "Traceback" not in ran.err
        ran = await run_cli("jobs", "--port", str(port), "--tls", "--ca-file", str(pki.other_ca),
                            "--client-cert", str(pki.client))
        assert ran.code == 1 and "to the CA that signed the manager's certificate" in ran.err, ran
    finally:
        await worker.stop(grace=0)
    assert "manager listening on https://" in proc.output()
    assert_secret_hidden(proc)


@pytest.mark.parametrize(("args", "expected"), [
    (("--require-client-cert",), "--require-client-cert without --ssl-certfile"),
    (("--ssl-certfile", "missing.pem"), "cannot load the manager's certificate 'missing.pem'"),
], ids=["no-certificate", "missing-file"])
async def test_manager_with_bad_tls_options_is_a_usage_error(
    tmp_path: Path, args: tuple[str, ...], expected: str,
) -> None:
    ran = await run_cli("manager", "--port", str(free_port()), "--db", str(tmp_path / "j.db"),
                        *args, cwd=tmp_path)
    assert ran.code == 2, ran
    assert expected in ran.err and "Traceback" not in ran.err


# ------------------------------------------------------------------------------ call

async def test_call_prints_the_result_as_json(
    manager: RunningManager, etl_worker: EasyJobsWorker,
) -> None:
    """``call QUEUE TASK --kwargs/--args`` prints the result as JSON and exits 0."""
    ran = await run_cli(*call_args(manager, "ETL", "add", "--kwargs", '{"a": 2, "b": 40}'))
    assert (ran.code, ran.out) == (0, "42\n"), ran.err
    assert_no_secret(ran)

    ran = await run_cli(*call_args(manager, "ETL", "describe", "--args", '["x"]',
                                   "--kwargs", '{"tags": ["a", "b"]}'))
    assert ran.code == 0, ran.err
    assert json.loads(ran.out) == {"name": "x", "tags": ["a", "b"], "raw": {"$base64": "eA=="}}


async def test_call_reads_host_port_and_secret_file_from_env_and_options(
    manager: RunningManager, etl_worker: EasyJobsWorker, tmp_path: Path,
) -> None:
    """EASYJOBS_HOST/EASYJOBS_PORT replace --host/--port; --secret-file replaces the env secret."""
    (tmp_path / "secret").write_text(SECRET)
    ran = await run_cli("call", "--secret-file", str(tmp_path / "secret"), "ETL", "add",
                        "--args", "[5]",
                        env={"EASYJOBS_SECRET": "", "EASYJOBS_HOST": manager.host,
                             "EASYJOBS_PORT": str(manager.port)})
    assert (ran.code, ran.out) == (0, "5\n"), ran.err
    assert_no_secret(ran)


async def test_call_tries_the_managers_of_managers_in_order(
    manager: RunningManager, etl_worker: EasyJobsWorker,
) -> None:
    """--managers (or EASYJOBS_MANAGERS): nothing listens on the first, the second answers."""
    managers = f"127.0.0.1:{free_port()},{manager.host}:{manager.port}"
    ran = await run_cli("call", "--managers", managers, "ETL", "add", "--args", "[1, 2]")
    assert (ran.code, ran.out) == (0, "3\n"), ran.err
    ran = await run_cli("call", "ETL", "add", "--args", "[3, 4]",
                        env={"EASYJOBS_MANAGERS": managers})
    assert (ran.code, ran.out) == (0, "7\n"), ran.err


@pytest.mark.parametrize(("args", "env", "expected"), [
    (("--managers", "h:1", "--port", "2"), {}, "give --managers or --host/--port, not both"),
    ((), {"EASYJOBS_MANAGERS": "h:1", "EASYJOBS_PORT": "2"},
     "EASYJOBS_MANAGERS and EASYJOBS_HOST/EASYJOBS_PORT are both set"),
    (("--managers", "h:1,,h:2"), {}, "an entry of managers is empty: write host:port"),
    (("--managers", "h"), {}, "no port; write h:8220"),
    (("--ca-file", "ca.pem"), {}, "no manager is reached over TLS: write wss://"),
], ids=["both-flags", "both-env", "empty-entry", "no-port", "ca-without-tls"])
async def test_bad_manager_options_are_usage_errors(
    args: tuple[str, ...], env: dict[str, str], expected: str,
) -> None:
    """Both forms at once, or a malformed entry: exit 2 and one line saying what to write."""
    ran = await run_cli("jobs", *args, env={"EASYJOBS_MANAGERS": "", "EASYJOBS_HOST": "",
                                            "EASYJOBS_PORT": "", **env})
    assert ran.code == 2, ran
    assert expected in ran.err and "Traceback" not in ran.err, ran.err


async def test_call_no_wait_prints_the_job_id(
    manager: RunningManager, etl_worker: EasyJobsWorker, client: EasyJobsClient,
) -> None:
    """With --no-wait it prints {"job_id": ...} at once; the job still runs."""
    ran = await run_cli(*call_args(manager, "ETL", "add", "--args", "[1, 2]", "--no-wait"))
    assert ran.code == 0, ran.err
    printed = json.loads(ran.out)
    assert list(printed) == ["job_id"]
    assert await client.result(printed["job_id"], timeout=TIMEOUT) == 3


async def test_call_of_a_failing_task_exits_1_with_the_remote_error(
    manager: RunningManager, etl_worker: EasyJobsWorker,
) -> None:
    """The remote exception's type, message and traceback go to stderr; exit code 1."""
    ran = await run_cli(*call_args(manager, "ETL", "explode", "--kwargs",
                                   '{"message": "disk on fire"}'))
    assert ran.code == 1
    assert ran.out == ""
    assert ran.err.startswith("ValueError: disk on fire\n")
    assert "Traceback" in ran.err and "raise ValueError(message)" in ran.err
    assert_no_secret(ran)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("ETL", "nope"), "UnknownTask: no worker has registered task 'nope' in queue 'ETL'"),
        (("ETL", "add", "--kwargs", '{"c": 1}'), "InvalidArguments"),
        (("ETL", "add", "--args", '["1", 2]'),
         "InvalidArguments: add() argument 'a' must be an integer"),
    ],
    ids=["unknown-task", "bad-arguments", "wrong-type"],
)
async def test_call_that_the_manager_refuses_exits_1_with_a_clear_message(
    manager: RunningManager, etl_worker: EasyJobsWorker, args: tuple[str, ...], expected: str,
) -> None:
    """An unknown task, arguments that do not bind or of the wrong type: exit 1, one clear line
    on stderr."""
    ran = await run_cli(*call_args(manager, *args))
    assert ran.code == 1
    assert ran.err.startswith("easyjobs: ") and expected in ran.err, ran.err
    assert "Traceback" not in ran.err


async def test_call_with_malformed_json_is_a_usage_error(manager: RunningManager) -> None:
    """--kwargs that is not a JSON object: a usage message, nothing is sent."""
    ran = await run_cli(*call_args(manager, "ETL", "add", "--kwargs", "{a: 1}"))
    assert ran.code == 2
    assert "--args/--kwargs must be JSON" in ran.err


# ------------------------------------------------------------------------------ worker

async def test_worker_takes_managers_from_the_command_line(
    manager: RunningManager, process_factory: Callable[..., Process],
) -> None:
    """`easyjobs worker M:A --managers ...`, for a worker built without addresses: it passes
    over the dead first address and serves from the second."""
    managers = f"127.0.0.1:{free_port()},127.0.0.1:{manager.port}"
    proc = process_factory("-m", "easyjobs", "worker", "procs.listed_worker:worker",
                           "--managers", managers)
    await wait_until(lambda: serving(manager, "add", "listed"), what="the worker to serve")
    async with EasyJobsClient(manager.host, manager.port, SECRET) as client:
        assert await client.call("LISTED", "add", 2, 3) == 5
    assert proc.popen.poll() is None


async def test_worker_that_names_its_managers_refuses_managers_from_the_command_line() -> None:
    """A worker built with manager_host/manager_port: --managers would be ignored, so exit 2."""
    ran = await run_cli("worker", "procs.worker_app:worker", "--managers", "127.0.0.1:1",
                        env={"EASYJOBS_PORT": "8220"})
    assert ran.code == 2, ran
    assert "names its managers itself; drop --managers" in ran.err


async def test_worker_that_passes_its_own_secret_refuses_another_from_a_file(
        tmp_path: Path) -> None:
    """A worker built with manager_secret: a --secret-file holding another would be ignored,
    so exit 2 (the secrets appear nowhere in the output)."""
    other = tmp_path / "secret"
    other.write_text("another-secret-9c1d\n")
    ran = await run_cli("worker", "procs.worker_app:worker", "--secret-file", str(other),
                        env={"EASYJOBS_PORT": "8220"})
    assert ran.code == 2, ran
    assert "passes its own manager_secret, which --secret-file does not replace" in ran.err
    assert "another-secret" not in ran.err + ran.out and SECRET not in ran.err + ran.out



async def test_worker_drains_its_running_job_on_sigterm(
    manager: RunningManager, process_factory: Callable[..., Process], client: EasyJobsClient,
    tmp_path: Path,
) -> None:
    """SIGTERM: the worker takes no new job, lets the running one finish, reports it, exits 0."""
    proc = spawn_worker(process_factory, manager.port, "drainer", "--grace", str(TIMEOUT))
    await wait_until(lambda: serving(manager, "hold", "drainer"), what="the worker to register")
    assert_secret_hidden(proc)
    marker = tmp_path / "holding"
    job = await client.submit(QUEUE, "hold", marker=str(marker))
    await wait_until(marker.exists, what="the job to start")

    proc.popen.send_signal(signal.SIGTERM)
    await wait_until(lambda: "draining" in proc.output(), what="the worker to start draining")
    later = await client.submit(QUEUE, "add", 1, 2)  # paused: must not go to the drainer
    assert proc.popen.poll() is None, "the worker left before its job finished"

    proc.popen.send_signal(signal.SIGUSR1)  # the job may finish now
    assert await job.result(timeout=TIMEOUT) == "released"
    assert await finished(proc) == 0
    info = await job.info()
    assert (info["status"], info["attempts"], info["worker"]) == ("succeeded", 1, "drainer")
    assert (await later.info())["status"] == "queued"
    assert_secret_hidden(proc)


async def test_worker_stopped_past_its_grace_period_leaves_the_job_to_be_requeued(
    manager: RunningManager, process_factory: Callable[..., Process], client: EasyJobsClient,
    tmp_path: Path,
) -> None:
    """A job still running when the grace period ends is cancelled and goes back to the queue."""
    proc = spawn_worker(process_factory, manager.port, "impatient", "--grace", "0.2")
    await wait_until(lambda: serving(manager, "hang", "impatient"), what="the worker to register")
    marker = tmp_path / "hanging"
    job = await client.submit(QUEUE, "hang", marker=str(marker))
    await wait_until(marker.exists, what="the job to start")

    proc.popen.send_signal(signal.SIGTERM)
    assert await finished(proc) == 0
    assert "stopped with 1 job(s) unfinished" in proc.output()

    async def requeued() -> bool:
        info = await job.info()
        return (info["status"], info["attempts"]) == ("queued", 1)

    await wait_until(requeued, what="the job to be requeued")
    assert_secret_hidden(proc)


async def test_manager_with_an_unreachable_database_fails_in_one_line(tmp_path: Path) -> None:
    """A PostgreSQL URL nobody answers: exit 1, one line naming host and port, no password."""
    port = free_port()
    ran = await run_cli("manager", "--port", str(free_port()),
                        "--db", f"postgresql://easyjobs:hunter2@127.0.0.1:{port}/jobs",
                        cwd=tmp_path)
    assert ran.code == 1
    lines = [line for line in ran.err.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and f"127.0.0.1:{port}/jobs" in lines[0], ran.err
    assert "Traceback" not in ran.err and "hunter2" not in ran.err


def test_a_manager_advertises_where_it_listens_unless_that_is_every_interface_or_loopback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the other managers reach this one: --advertise (or EASYJOBS_ADVERTISE) as given,
    wss:// when it serves TLS; else its --host and port; none for a wildcard or loopback host
    (another manager would reach nothing there, or itself)."""
    monkeypatch.delenv("EASYJOBS_ADVERTISE", raising=False)
    assert cli._advertised(None, "10.0.0.5", 8220, tls=False) == "ws://10.0.0.5:8220"
    assert cli._advertised(None, "fd00::5", 8220, tls=True) == "wss://[fd00::5]:8220"
    assert cli._advertised(None, "jobs-1.internal", 8220, tls=False) == (
        "ws://jobs-1.internal:8220")
    for nowhere in ("0.0.0.0", "::", "127.0.0.1", "::1", "localhost"):
        assert cli._advertised(None, nowhere, 8220, tls=False) is None, nowhere
    assert cli._advertised("m1.internal:9000", "0.0.0.0", 8220, tls=True) == (
        "wss://m1.internal:9000")
    assert cli._advertised("127.0.0.1:9000", "127.0.0.1", 8220, tls=False) == (
        "ws://127.0.0.1:9000")
    monkeypatch.setenv("EASYJOBS_ADVERTISE", "m2:9000")
    assert cli._advertised(None, "0.0.0.0", 8220, tls=False) == "ws://m2:9000"
    with pytest.raises(ConfigurationError, match="unknown scheme 'http'"):
        cli._advertised("http://m1:9000", "0.0.0.0", 8220, tls=False)


async def test_a_bad_advertised_address_stops_the_manager_before_it_listens(
        tmp_path: Path) -> None:
    ran = await run_cli("manager", "--port", str(free_port()), "--db", str(tmp_path / "j.db"),
                        "--advertise", "http://m1:9000")
    assert ran.code == 2, ran
    assert "unknown scheme 'http'" in ran.err and "listening" not in ran.err
    assert "Traceback" not in ran.err and not (tmp_path / "j.db").exists()


async def test_the_managers_listening_socket_gives_connections_without_nagle() -> None:
    """The socket ``easyjobs manager`` binds itself makes asyncio turn Nagle off on each
    connection it accepts (TCP_NODELAY): without it a small frame waits ~40 ms for an ACK."""
    sock = cli._bind("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            conn = transport.get_extra_info("socket")
            accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        assert await asyncio.wait_for(accepted, TIMEOUT) == 1
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
