"""Scoped credentials against a real manager process: workers, clients and the CLI each under
a credential of a role and queues, refused outside them, revoked at once; the secrets of the
credentials nowhere in logs, argv, the database file or error messages."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from easyjobs import EasyJobsClient, EasyJobsWorker, PermissionDenied
from easyjobs.errors import AuthenticationError
from easyjobs.protocol.frames import Error, Pause, Submit, decode_message
from easyjobs.protocol.session import CLOSE_PERMISSION_DENIED

from .conftest import Process
from .processes import (
    QUEUE,
    assert_secret_hidden,
    finished,
    handshake,
    run_cli,
    spawn_manager,
    spawn_worker,
    wait_listening,
)
from .utils import SECRET, TIMEOUT, free_port, wait_until

OTHER = "OTHER"


@dataclass
class Deployment:
    """A manager process and the credentials made for the test with ``easyjobs credentials``."""

    port: int
    manager: Process
    db: Path
    spawn: Callable[..., Process]
    tokens: dict[str, str] = field(default_factory=dict)

    async def add(self, name: str, role: str, queues: str | None = None) -> str:
        extra = ["--queues", queues] if queues else []
        ran = await run_cli("credentials", "add", name, "--role", role, *extra,
                            "--port", str(self.port))
        assert ran.code == 0, ran.err
        token = ran.out.strip()
        assert token.startswith(f"ej1.{name}.") and "shown only now" in ran.err
        self.tokens[name] = token
        return token

    def client(self, name: str) -> EasyJobsClient:
        return EasyJobsClient(port=self.port, secret=self.tokens[name], connect_timeout=5,
                              request_timeout=TIMEOUT)

    def http(self, name: str | None) -> httpx.AsyncClient:
        token = SECRET if name is None else self.tokens[name]
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=TIMEOUT,
                                 headers={"Authorization": f"Bearer {token}"})

    def secrets(self) -> list[str]:
        """Each token, and its key part alone."""
        return [part for token in self.tokens.values() for part in (token,
                                                                    token.rpartition(".")[2])]


@pytest.fixture
async def deployment(process_factory: Callable[..., Process], tmp_path: Path
                     ) -> AsyncIterator[Deployment]:
    port = free_port()
    db = tmp_path / "jobs.db"
    manager = spawn_manager(process_factory, port, db)
    await wait_listening(manager, port)
    deployment = Deployment(port, manager, db, process_factory)
    await deployment.add("procs-worker", "worker", QUEUE)
    await deployment.add("other-worker", "worker", OTHER)
    await deployment.add("procs-client", "client", QUEUE)
    await deployment.add("other-client", "client", OTHER)
    yield deployment
    for secret in deployment.secrets():  # whatever the test did, no secret was written out
        assert secret not in manager.output()
        for path in db.parent.glob("jobs.db*"):
            assert secret.encode() not in path.read_bytes(), path


async def serving_worker(deployment: Deployment, credential: str) -> Process:
    """The test worker app (queue PROCS) under ``credential``, once its task ``add`` runs."""
    worker = spawn_worker(deployment.spawn, deployment.port, "w-" + credential,
                          env={"EASYJOBS_SECRET": deployment.tokens[credential]})
    async with deployment.http(None) as admin:
        async def advertised() -> bool:
            if worker.popen.poll() is not None:
                raise AssertionError(f"the worker exited:\n{worker.output()}")
            workers = (await admin.get("/workers")).json()["workers"]
            return any(w["name"] == "w-" + credential and "PROCS.add" in w["tasks"]
                       for w in workers)
        await wait_until(advertised, what=f"the worker under {credential} to serve PROCS.add")
    async with deployment.client("procs-client") as client:
        assert await client.call(QUEUE, "add", 2, 3) == 5
    return worker


@asynccontextmanager
async def other_worker(deployment: Deployment) -> AsyncIterator[EasyJobsWorker]:
    """A worker in this process under the OTHER worker credential, serving ``OTHER.echo``."""
    worker = EasyJobsWorker(manager_port=deployment.port, jobs_queue=OTHER, connect_timeout=5,
                            manager_secret=deployment.tokens["other-worker"])

    @worker.task()
    async def echo(x: int) -> int:
        return x

    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def test_a_worker_credential_serves_its_queue_and_nothing_else(
        deployment: Deployment) -> None:
    """A worker under a credential for PROCS serves PROCS; one for OTHER may not advertise
    PROCS tasks: it exits 1 saying so, and the manager logs who tried what."""
    worker = await serving_worker(deployment, "procs-worker")
    stranger = spawn_worker(deployment.spawn, deployment.port, "stranger",
                            env={"EASYJOBS_SECRET": deployment.tokens["other-worker"]})
    assert await finished(stranger, TIMEOUT) == 1
    assert "permission denied by the manager" in stranger.output()
    assert "credential 'other-worker' (worker) may not serve queue 'PROCS'" in stranger.output()
    await wait_until(lambda: "refused credential 'other-worker' (worker): serve queue 'PROCS'"
                     in deployment.manager.output(), what="the manager's log of the refusal")
    assert worker.popen.poll() is None  # everyone else is still served
    async with deployment.client("procs-client") as client:
        assert await client.call(QUEUE, "add", 1, 1) == 2


async def test_a_worker_credential_may_not_submit_pause_others_or_act_as_a_client(
        deployment: Deployment) -> None:
    """Over a worker's link, a submit is answered ``permission_denied`` (the link stays) and
    a pause pauses that worker alone; pausing the workers over HTTP is refused; as a client
    the credential is refused at connect."""
    worker = await serving_worker(deployment, "procs-worker")
    async with connect(f"ws://127.0.0.1:{deployment.port}/ws/jobs") as ws:
        session = await handshake(ws, "worker", deployment.tokens["procs-worker"])
        session.send(Submit(7, "f" * 32, QUEUE, "add", [1, 2], {}))
        session.send(Pause(True))
        for message in session.data_to_send():
            await ws.send(message)
        errors: list[Error] = []
        while not errors:
            errors += [f for f in decode_message(await asyncio.wait_for(ws.recv(), TIMEOUT))
                       if isinstance(f, Error)]
        assert [(e.code, e.ref) for e in errors] == [("permission_denied", 7)]
        assert "may not submit to queue 'PROCS'" in errors[0].message
        async with deployment.http(None) as admin:
            async def it_alone_paused() -> bool:
                paused = {w["name"]: w["paused"]
                          for w in (await admin.get("/workers")).json()["workers"]}
                return paused.get("fuzz-worker") is True and paused["w-procs-worker"] is False
            await wait_until(it_alone_paused, what="the pausing worker alone to be paused")
        async with deployment.http("procs-worker") as http:
            refused = await http.post("/workers/pause", json={})
            assert refused.status_code == 403
            assert "may not use the HTTP API" in refused.json()["error"]["message"]
    assert worker.popen.poll() is None
    async with deployment.client("procs-client") as client:  # the other worker still serves
        assert await client.call(QUEUE, "add", 2, 2) == 4
    with pytest.raises(PermissionDenied, match="may not connect as a client"):
        async with deployment.client("procs-worker"):
            pass


async def test_a_client_credential_sees_and_acts_on_its_queues_only(
        deployment: Deployment) -> None:
    """A client for OTHER cannot read a PROCS job by id, listing, HTTP or the event feed,
    cannot cancel or submit to it, and cannot register as a worker."""
    await serving_worker(deployment, "procs-worker")
    async with deployment.client("procs-client") as own:
        job = await own.submit(QUEUE, "add", 4, 5)
        assert await job.result(TIMEOUT) == 9
    async with deployment.client("other-client") as other:
        for attempt in (other.job(job.id), other.cancel(job.id)):
            with pytest.raises(PermissionDenied, match=f"job {job.id} of queue 'PROCS'"):
                await attempt
        with pytest.raises(PermissionDenied, match="may not submit to queue 'PROCS'"):
            await other.submit(QUEUE, "add", 1, 2)
        with pytest.raises(PermissionDenied, match="may not list queue 'PROCS'"):
            await other.jobs(queue=QUEUE)
        assert (await other.jobs())[0] == []  # PROCS jobs are not in its listing
    async with deployment.http("other-client") as http:
        assert (await http.get(f"/jobs/{job.id}")).status_code == 403
        assert (await http.get(f"/jobs/{job.id}/result")).status_code == 403
        assert (await http.post(f"/jobs/{job.id}/cancel")).status_code == 403
        assert (await http.get("/jobs")).json()["jobs"] == []
        refused = await http.post(f"/{QUEUE}/task/add", json={"a": 1, "b": 2})
        assert refused.status_code == 403
        assert refused.json()["error"]["type"] == "permission_denied"
        for admin_only in ("/workers", "/credentials", "/metrics"):
            assert (await http.get(admin_only)).status_code == 403, admin_only
    async with deployment.http("procs-client") as http:
        assert (await http.get(f"/jobs/{job.id}")).json()["result"] == 9
    async with connect(f"ws://127.0.0.1:{deployment.port}/ws/jobs") as ws:
        with pytest.raises(AssertionError, match="may not connect as a worker"):
            await handshake(ws, "worker", deployment.tokens["other-client"])
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_PERMISSION_DENIED


async def test_the_event_feed_of_a_client_holds_its_queues_only(deployment: Deployment) -> None:
    """Both clients follow the feed while a PROCS job runs, then a job of OTHER is made: the
    OTHER client's first events are that job's (it saw none of PROCS), the PROCS client saw
    its own job finish."""
    await serving_worker(deployment, "procs-worker")

    async def events(name: str, until: Callable[[dict[str, Any]], bool],
                     ready: asyncio.Event) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with deployment.http(name) as http, http.stream("GET", "/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith(": connected"):
                    ready.set()
                elif line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if until(seen[-1]):
                        return seen
        raise AssertionError(f"the feed of {name} ended")

    def finished_in(queue: str) -> Callable[[dict[str, Any]], bool]:
        return lambda e: e["kind"] == "job" and e["job"]["queue"] == queue

    ready = [asyncio.Event(), asyncio.Event()]
    own = asyncio.ensure_future(events("procs-client", lambda e: e.get("change") == "finished",
                                       ready[0]))
    other = asyncio.ensure_future(events("other-client", finished_in(OTHER), ready[1]))
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), TIMEOUT)
    async with deployment.client("procs-client") as client:
        assert await client.call(QUEUE, "add", 1, 2) == 3
    seen_own = await asyncio.wait_for(own, TIMEOUT)
    assert {e["job"]["queue"] for e in seen_own} == {QUEUE}
    async with other_worker(deployment), deployment.client("other-client") as client:
        assert await client.call(OTHER, "echo", 1) == 1
    seen_other = await asyncio.wait_for(other, TIMEOUT)
    assert {e["job"]["queue"] for e in seen_other} == {OTHER}


async def test_a_revoked_credential_is_cut_off_at_once(deployment: Deployment) -> None:
    """Revoking a worker's credential closes its open link (the worker stops, it may not
    reconnect) and refuses its next connect; an HTTP call with it gets 401."""
    worker = await serving_worker(deployment, "procs-worker")
    assert_secret_hidden(worker, deployment.tokens["procs-worker"])
    listed = await run_cli("credentials", "list", "--port", str(deployment.port))
    assert "procs-worker\tworker\tPROCS" in listed.out.splitlines()
    ran = await run_cli("credentials", "revoke", "procs-worker", "--port", str(deployment.port))
    assert ran.code == 0, ran.err
    assert await finished(worker, TIMEOUT) == 1
    assert "revoked" in worker.output()
    again = spawn_worker(deployment.spawn, deployment.port, "again",
                         env={"EASYJOBS_SECRET": deployment.tokens["procs-worker"]})
    assert await finished(again, TIMEOUT) == 1
    assert "authentication failed" in again.output()
    async with deployment.http("procs-worker") as http:
        assert (await http.get("/queues")).status_code == 401
    gone = await run_cli("credentials", "revoke", "procs-worker", "--port", str(deployment.port))
    assert gone.code == 1 and "no credential 'procs-worker'" in gone.err
    for secret in deployment.secrets():
        for text in (ran.out, ran.err, listed.out, listed.err, gone.err, worker.output(),
                     again.output()):
            assert secret not in text


async def test_credentials_need_the_manager_secret_and_say_what_is_wrong(
        deployment: Deployment) -> None:
    """Only an admin manages credentials; a bad request says what to fix; a taken name is
    refused; the CLI exits 1 naming the address when no manager answers."""
    as_client = await run_cli("credentials", "list", "--port", str(deployment.port),
                              env={"EASYJOBS_SECRET": deployment.tokens["procs-client"]})
    assert as_client.code == 1 and "may not list credentials" in as_client.err
    taken = await run_cli("credentials", "add", "procs-client", "--role", "client",
                          "--queues", QUEUE, "--port", str(deployment.port))
    assert taken.code == 1 and "exists; revoke it first" in taken.err
    no_queues = await run_cli("credentials", "add", "x", "--role", "worker",
                              "--port", str(deployment.port))
    assert no_queues.code == 1 and "needs the queues it may use" in no_queues.err
    port = free_port()
    nobody = await run_cli("credentials", "list", "--port", str(port), "--timeout", "2")
    assert nobody.code == 1 and f"127.0.0.1:{port}" in nobody.err
    with pytest.raises(AuthenticationError):
        async with EasyJobsClient(port=deployment.port, connect_timeout=5,
                                  secret="ej1.procs-client.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"):
            pass


async def test_a_submit_reusing_the_id_of_another_queues_job_gets_no_outcome(
        deployment: Deployment) -> None:
    """A client for OTHER that re-sends a submit with the id of a PROCS job (as a reconnecting
    client would its own) is refused: the job neither runs again under OTHER nor gives its
    outcome away."""
    await serving_worker(deployment, "procs-worker")
    async with deployment.client("procs-client") as own:
        job = await own.submit(QUEUE, "add", 20, 22)
        assert await job.result(TIMEOUT) == 42
    async with other_worker(deployment):
        async with deployment.client("other-client") as other:
            assert await other.call(OTHER, "echo", 1) == 1
            calls = other._link.calls
            with pytest.raises(PermissionDenied) as refused:
                await calls.submit(OTHER, "echo", [5], {}, watch=True, job_id=job.id)
            assert str(refused.value) == (  # exactly this: nothing of the PROCS outcome
                "credential 'other-client' (client) may not submit to queue 'PROCS'")
        async with deployment.client("procs-client") as own:  # the PROCS job is untouched
            record = await own.job(job.id)
            assert (record["queue"], record["status"], record["result"]) == (
                QUEUE, "succeeded", 42)


async def test_the_cli_never_sends_the_manager_secret_in_the_clear_off_this_machine() -> None:
    """``easyjobs credentials`` to a manager that is not on loopback and not reached over TLS
    refuses before connecting (the manager secret would cross the network in plain text)."""
    ran = await run_cli("credentials", "list", "--managers", "10.255.255.1:8220",
                        "--timeout", "2")
    assert ran.code == 1
    assert "not sending the manager secret to 10.255.255.1:8220 in the clear" in ran.err
    assert SECRET not in ran.err + ran.out
