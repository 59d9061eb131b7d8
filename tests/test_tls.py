"""TLS end to end with real uvicorn servers and a CA made for the test: verified connections
work (submit → result over wss, mutual TLS too); a wrong CA, a wrong host name, an expired
certificate, a refused client certificate, and either end speaking plain text to the other fail
at once with one TLSError naming the manager and the reason, never a retry loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from easyjobs import ConfigurationError, ConnectionLost, EasyJobsClient, EasyJobsWorker, TLSError
from easyjobs.tls import server_options

from .certs import Pki, make_pki, start_tls_manager
from .conftest import FAST_BACKOFF, RunningManager
from .utils import SECRET, TIMEOUT

FAST = 3.0
"""Seconds a TLS failure may take to be reported: far below connect_timeout (10 s)."""

Start = Callable[..., Coroutine[Any, Any, RunningManager]]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
async def tls_manager(tmp_path: Path) -> AsyncIterator[Start]:
    """Start managers over TLS (``await tls_manager(certfile, ...)``); stopped afterwards."""
    started: list[RunningManager] = []

    async def start(certfile: Path | None, ca_certs: Path | None = None,
                    require_client_cert: bool = False) -> RunningManager:
        running = await start_tls_manager(tmp_path / f"jobs{len(started)}.db", certfile,
                                          ca_certs, require_client_cert)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


async def adder(managers: list[str], **tls: Any) -> EasyJobsWorker:
    worker = EasyJobsWorker(manager_secret=SECRET, jobs_queue="ETL", managers=managers,
                            backoff=FAST_BACKOFF, **tls)

    @worker.task()
    async def add(a: int, b: int) -> int:
        return a + b

    await worker.start()
    return worker


async def refused(client: EasyJobsClient) -> TLSError:
    """Connect, expecting a TLSError soon; the error."""
    started = time.monotonic()
    with pytest.raises(TLSError) as raised:
        await asyncio.wait_for(client.connect(), TIMEOUT)
    assert time.monotonic() - started < FAST
    await client.close()
    return raised.value


# ------------------------------------------------------------------ verified connections

async def test_submit_and_result_over_wss(pki: Pki, tls_manager: Start) -> None:
    """Worker (wss:// entry) and client (tls=True) verify the manager with ca_file."""
    running = await tls_manager(pki.server)
    worker = await adder([f"wss://127.0.0.1:{running.port}"], ca_file=str(pki.ca))
    try:
        async with EasyJobsClient("127.0.0.1", running.port, SECRET, tls=True,
                                  ca_file=str(pki.ca)) as client:
            job = await client.submit("ETL", "add", 2, 3)
            assert await job.result(TIMEOUT) == 5
    finally:
        await worker.stop(grace=0)


async def test_the_ca_file_may_come_from_the_environment(
    pki: Pki, tls_manager: Start, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EASYJOBS_TLS_CA stands in for ca_file."""
    running = await tls_manager(pki.server)
    monkeypatch.setenv("EASYJOBS_TLS_CA", str(pki.ca))
    async with EasyJobsClient(managers=[f"wss://127.0.0.1:{running.port}"],
                              secret=SECRET) as client:
        assert (await client.jobs()) == ([], None)


async def test_mutual_tls_accepted(pki: Pki, tls_manager: Start) -> None:
    """A manager requiring client certificates serves a worker and a client presenting one."""
    running = await tls_manager(pki.server, pki.ca, require_client_cert=True)
    tls = {"ca_file": str(pki.ca), "client_cert": str(pki.client)}
    worker = await adder([f"wss://127.0.0.1:{running.port}"], **tls)
    try:
        async with EasyJobsClient(managers=[f"wss://127.0.0.1:{running.port}"], secret=SECRET,
                                  **tls) as client:
            assert await client.call("ETL", "add", 20, 22) == 42
    finally:
        await worker.stop(grace=0)


# ------------------------------------------------------------------ failures, at once

@pytest.mark.parametrize(("certificate", "reason"), [
    ("server", "unable to get local issuer certificate; pass ca_file= (or set EASYJOBS_TLS_CA)"),
    ("wrong_name", "certificate is not valid for '127.0.0.1'; connect by a name the "
                   "certificate lists"),
    ("expired", "certificate has expired; the manager needs a renewed certificate"),
], ids=["wrong-ca", "wrong-hostname", "expired"])
async def test_a_certificate_that_does_not_verify_fails_fast(
    pki: Pki, tls_manager: Start, certificate: str, reason: str,
) -> None:
    """One TLSError naming host:port and the reason; the wrong-CA case trusts another CA."""
    running = await tls_manager(getattr(pki, certificate))
    trusted = pki.other_ca if certificate == "server" else pki.ca
    error = await refused(EasyJobsClient("127.0.0.1", running.port, SECRET, tls=True,
                                         ca_file=str(trusted), backoff=FAST_BACKOFF))
    message = str(error)
    assert f"TLS with the manager at 127.0.0.1:{running.port} failed" in message
    assert reason in message and "\n" not in message


async def test_a_worker_with_a_bad_certificate_fails_at_start_and_logs_one_line(
    pki: Pki, tls_manager: Start, caplog: pytest.LogCaptureFixture,
) -> None:
    """start() raises the TLSError instead of retrying; the link logs it once."""
    running = await tls_manager(pki.wrong_name)
    with caplog.at_level(logging.INFO, logger="easyjobs.link"):
        with pytest.raises(TLSError, match=f"127.0.0.1:{running.port}.*not valid"):
            await asyncio.wait_for(
                adder([f"wss://127.0.0.1:{running.port}"], ca_file=str(pki.ca)), FAST)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "not valid for '127.0.0.1'" in lines[0], lines


@pytest.mark.parametrize("presented", [None, "foreign_client"], ids=["none", "foreign"])
async def test_mutual_tls_refused(pki: Pki, tls_manager: Start, presented: str | None) -> None:
    """No client certificate, or one from a CA the manager does not trust: refused at once."""
    running = await tls_manager(pki.server, pki.ca, require_client_cert=True)
    cert = str(getattr(pki, presented)) if presented else None
    error = await refused(EasyJobsClient(
        managers=[f"wss://127.0.0.1:{running.port}"], secret=SECRET, ca_file=str(pki.ca),
        client_cert=cert, backoff=FAST_BACKOFF))
    expected = "did not accept our client certificate" if cert else \
        "requires a client certificate; pass client_cert="
    assert f"manager at 127.0.0.1:{running.port}" in str(error) and expected in str(error)


async def test_a_plain_client_at_a_tls_port_is_told_to_use_wss(
    pki: Pki, tls_manager: Start,
) -> None:
    running = await tls_manager(pki.server)
    error = await refused(EasyJobsClient("127.0.0.1", running.port, SECRET,
                                         backoff=FAST_BACKOFF))
    assert f"speaks TLS and we do not: write wss://127.0.0.1:{running.port}" in str(error)


async def test_a_tls_client_at_a_plain_port_is_told_it_does_not_speak_tls(
    pki: Pki, tls_manager: Start,
) -> None:
    running = await tls_manager(None)
    error = await refused(EasyJobsClient(managers=[f"wss://127.0.0.1:{running.port}"],
                                         secret=SECRET, ca_file=str(pki.ca),
                                         backoff=FAST_BACKOFF))
    assert f"manager at 127.0.0.1:{running.port} does not speak TLS" in str(error)


async def test_a_peer_that_hangs_up_unanswered_without_tls_is_retried() -> None:
    """The symptom the TLS diagnosis looks into (closed before any answer) is an outage when
    the port does not speak TLS either: the link keeps trying, and connect times out."""
    hung_up = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal hung_up
        hung_up += 1
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = EasyJobsClient("127.0.0.1", port, SECRET, backoff=FAST_BACKOFF,
                                connect_timeout=1.0)
        with pytest.raises(ConnectionLost) as raised:
            await asyncio.wait_for(client.connect(), TIMEOUT)
        assert not isinstance(raised.value, TLSError)
        assert hung_up >= 4  # tried, asked, and tried again
    finally:
        server.close()
        await server.wait_closed()


# ------------------------------------------------------------------ bad settings, at once

def test_bad_client_settings_fail_at_construction(pki: Pki, tmp_path: Path) -> None:
    """Missing files, TLS files without TLS, a key without its certificate."""
    wss = ["wss://127.0.0.1:1"]
    with pytest.raises(ConfigurationError, match="cannot load the CA file .*nope.pem"):
        EasyJobsClient(managers=wss, secret=SECRET, ca_file=str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigurationError, match="cannot load the client certificate"):
        EasyJobsClient(managers=wss, secret=SECRET, client_cert=str(pki.ca))
    with pytest.raises(ConfigurationError, match="client_key given without client_cert"):
        EasyJobsClient(managers=wss, secret=SECRET, client_key=str(pki.client))
    with pytest.raises(ConfigurationError, match="ca_file given but no manager is reached"):
        EasyJobsWorker(manager_secret=SECRET, managers=["127.0.0.1:1"], ca_file=str(pki.ca))


def test_server_options(pki: Pki, tmp_path: Path) -> None:
    """uvicorn's options for the manager; contradictions and unreadable files are refused."""
    assert server_options(None) == {}
    options = server_options(str(pki.server), None, str(pki.ca), True)
    assert options["ssl_certfile"] == str(pki.server) and options["ssl_cert_reqs"] == 2
    with pytest.raises(ConfigurationError, match="--ssl-keyfile without --ssl-certfile"):
        server_options(None, str(pki.server))
    with pytest.raises(ConfigurationError, match="--require-client-cert needs --ssl-ca-certs"):
        server_options(str(pki.server), require_client_cert=True)
    with pytest.raises(ConfigurationError, match="cannot load the manager's certificate"):
        server_options(str(pki.ca))  # a certificate without its key
    with pytest.raises(ConfigurationError, match="cannot load the CA file"):
        server_options(str(pki.server), ca_certs=str(tmp_path / "nope.pem"))
