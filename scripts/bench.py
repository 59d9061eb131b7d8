"""Benchmark: real manager, worker and client processes; figures beside floors of the same run.

    python scripts/bench.py [--jobs 5000] [--calls 300] [--chains 200] [--rounds 3]
                            [--against PATH] [--backlog 200000]
                            [--db postgresql://postgres@127.0.0.1:5432/test [--managers 2]]

Floors, measured first in the same run (what the machine can do at all today):
  a bare websockets echo round trip, a single SQLite commit (WAL, synchronous=NORMAL), and a
  bare Starlette route over HTTP/1.1 keep-alive.
Per version (this tree, and the tree at ``--against PATH``, e.g. a worktree of the previous
main; rounds alternate between them so both see the same machine):
  (a) round trip of sequential ``await noop(x)`` calls from a client (p50/p90/p99 ms);
  (b) throughput of N no-op jobs submitted at once by one client, run by one worker
      (max_tasks_per_worker=100), first submit to last result;
  (c) a task awaiting three tasks in turn (p50 ms).
For this tree, each round also runs (a)-(c) over TLS (``wss``, a CA made by trustme for the
run), printed under ``wss`` beside the plain figures, with their ratio.
With ``--db URL`` (a PostgreSQL server on loopback), each round also runs (a)-(c) for this tree
with one manager on PostgreSQL, under ``postgres`` with the PostgreSQL/SQLite ratios; with
``--managers 2`` as well, two managers share one schema, the client on the first and the worker
on the second, under ``cluster``. Each such run gets a fresh schema, dropped after. ``targets``
sets the issue's two aims beside the SQLite figures of the same run: PostgreSQL throughput at
least half of SQLite's, a cross-manager round trip p50 at most 3 times SQLite's.
With ``--backlog N`` (per version, once): N jobs queued for a task no worker serves, then the
manager's RSS growth per queued job, throughput of a served task beside them, and the time a
restarted manager takes to serve again.
Each figure is the median over the rounds; the JSON also keeps every round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

HERE = Path(__file__).resolve().parent
TREE = Path(os.environ.get("BENCH_TREE", HERE.parent))
sys.path.insert(0, str(TREE))

SECRET = "bench-secret"
QUEUE = "bench"
LOOPBACK = ("127.0.0.1", "::1")
THROUGHPUT_TARGET = 0.5
"""PostgreSQL throughput over SQLite throughput, at least."""
ROUNDTRIP_TARGET = 3.0
"""Cross-manager round trip p50 over same-manager SQLite round trip p50, at most."""


# ---------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


async def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.01)
    raise RuntimeError(f"nothing listens on port {port}")


def rss(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def child_env(tree: Path, tls_ca: Path | None = None) -> dict[str, str]:
    """The environment of a child; with ``tls_ca``, its workers and clients use wss."""
    env = {**os.environ, "EASYJOBS_SECRET": SECRET, "BENCH_TREE": str(tree),
           "PYTHONPATH": str(tree)}
    if tls_ca is not None:
        env.update(BENCH_TLS="1", EASYJOBS_TLS_CA=str(tls_ca))
    return env


def run_json(tree: Path, *args: str, tls_ca: Path | None = None) -> Any:
    """Run this script in a child process against ``tree``; the JSON it prints."""
    out = subprocess.run([sys.executable, str(HERE / "bench.py"), *args],
                         env=child_env(tree, tls_ca), check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def address(port: int, host_name: str, port_name: str) -> dict[str, Any]:
    """The keyword arguments naming the manager: ``wss://`` in a TLS round (the CA comes from
    ``EASYJOBS_TLS_CA``), else the host and port that every easyjobs version takes."""
    if os.environ.get("BENCH_TLS"):
        return {"managers": [f"wss://127.0.0.1:{port}"]}
    return {host_name: "127.0.0.1", port_name: port}


# ---------------------------------------------------------------------------- PostgreSQL


def is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def check_postgres_url(url: str) -> str | None:
    """Why ``url`` is no PostgreSQL server the bench may use, or None: it must be on loopback,
    since the bench creates and drops schemas there."""
    if not is_postgres(url):
        return "--db takes a postgresql:// URL (SQLite runs anyway)"
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        return f"--db must name a server on 127.0.0.1 or ::1, not {host or 'a unix socket'}"
    return None


def postgres_admin(url: str) -> Any:
    """An autocommit connection to ``url``; exits with one line naming the host if none."""
    try:
        import psycopg
    except ImportError:
        raise SystemExit("bench.py: --db needs psycopg (pip install -e '.[postgres]')") from None
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        where = urlsplit(url)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SystemExit(f"bench.py: no PostgreSQL at {where.hostname}:{where.port or 5432}"
                         f" ({reason}); check --db") from None


def with_query(url: str, **options: str) -> str:
    """``url`` with libpq ``options`` added to its query string."""
    extra = "&".join(f"{key}={quote(value, safe='')}" for key, value in options.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A URL whose connections work in a fresh schema, dropped after (with any connection
    still on it, found by its application_name)."""
    name = f"ej_bench_{uuid.uuid4().hex[:16]}"
    with postgres_admin(url) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
        try:
            yield with_query(url, options=f"-csearch_path={name}", application_name=name)
        finally:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE application_name = %s", (name,))
            admin.execute(f"DROP SCHEMA {name} CASCADE")


# ---------------------------------------------------------------------------- floors


def floor_sqlite(n: int = 300) -> float:
    """Median of single-row INSERT + COMMIT in WAL mode, synchronous=NORMAL (ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t (v) VALUES (?)", (b"x" * 100,))
            conn.execute("COMMIT")
            times.append(time.perf_counter() - t0)
        conn.close()
    return ms(times, 0.5)


def echo_server(port: int) -> None:
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", port, compression=None):
            await asyncio.Event().wait()

    asyncio.run(main())


def route_server(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def hello(request: Any) -> JSONResponse:
        return JSONResponse({"ok": True})

    uvicorn.run(Starlette(routes=[Route("/", hello)]), host="127.0.0.1", port=port,
                log_level="warning")


async def floor_echo(port: int, n: int = 300) -> float:
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
        times = []
        for i in range(n + 20):
            t0 = time.perf_counter()
            await ws.send(b"x" * 64)
            await ws.recv()
            if i >= 20:
                times.append(time.perf_counter() - t0)
    return ms(times, 0.5)


async def floor_route(port: int, n: int = 300) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    times = []
    for i in range(n + 20):
        t0 = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        if i >= 20:
            times.append(time.perf_counter() - t0)
    writer.close()
    return ms(times, 0.5)


def floors() -> dict[str, float]:
    out = {"sqlite_commit_p50_ms": floor_sqlite()}
    for name, flag, measure in (("websockets_echo_p50_ms", "--echo-server", floor_echo),
                                ("starlette_route_p50_ms", "--route-server", floor_route)):
        port = free_port()
        server = subprocess.Popen([sys.executable, str(HERE / "bench.py"), flag, str(port)],
                                  env=child_env(TREE))
        try:
            asyncio.run(wait_port(port))
            out[name] = asyncio.run(measure(port))
        finally:
            server.terminate()
            server.wait(10)
    return out


# ---------------------------------------------------------------------------- the mesh


def worker_main(port: int, serve_idle: bool) -> None:
    from easyjobs import EasyJobsWorker

    worker = EasyJobsWorker(None, None, manager_secret=SECRET, jobs_queue=QUEUE,
                            max_tasks_per_worker=100,
                            **address(port, "manager_host", "manager_port"))
    if serve_idle:  # registers the task, then leaves: its jobs wait for nobody
        @worker.task()
        async def idle(x: int) -> int:
            return x
    else:
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
        if serve_idle:
            await worker.stop()
            return
        await asyncio.Event().wait()

    asyncio.run(run())


async def warm(client: Any) -> None:
    """Wait (bounded) until the worker serves ``noop``."""
    noop = client.task(QUEUE, "noop")
    deadline = time.monotonic() + 30
    while True:
        try:
            await asyncio.wait_for(noop(0), 2)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def throughput(client: Any, jobs: int) -> float:
    noop = client.task(QUEUE, "noop")
    t0 = time.perf_counter()
    results = await asyncio.gather(*(noop(i) for i in range(jobs)))
    elapsed = time.perf_counter() - t0
    assert results == list(range(jobs))
    return round(jobs / elapsed, 1)


async def client_main(port: int, jobs: int, calls: int, chains: int) -> dict[str, Any]:
    from easyjobs import EasyJobsClient

    async with EasyJobsClient(secret=SECRET, **address(port, "host", "port")) as client:
        await warm(client)
        noop, chain = client.task(QUEUE, "noop"), client.task(QUEUE, "chain")
        for i in range(50):
            await noop(i)
        latencies = []
        for i in range(calls):
            t0 = time.perf_counter()
            await noop(i)
            latencies.append(time.perf_counter() - t0)
        rate = await throughput(client, jobs)
        chain_times = []
        for i in range(chains):
            t0 = time.perf_counter()
            await chain(i)
            chain_times.append(time.perf_counter() - t0)
    return {"roundtrip_p50_ms": ms(latencies, 0.5), "roundtrip_p90_ms": ms(latencies, 0.9),
            "roundtrip_p99_ms": ms(latencies, 0.99), "throughput_jobs_per_s": rate,
            "chain3_p50_ms": ms(chain_times, 0.5)}


@contextmanager
def manager_process(tree: Path, port: int, db: Path | str, *extra: str
                    ) -> Iterator[subprocess.Popen[bytes]]:
    """A manager on ``db``: a SQLite file, or a PostgreSQL URL, which goes by ``EASYJOBS_DB``
    rather than argv since it may carry a password."""
    env, where = child_env(tree), ["--db", str(db)]
    if is_postgres(str(db)):
        env["EASYJOBS_DB"], where = str(db), []
    proc = subprocess.Popen(
        [sys.executable, "-m", "easyjobs", "--log-level", "WARNING", "manager",
         "--host", "127.0.0.1", "--port", str(port), *where, *extra],
        env=env, cwd=tree)
    try:
        asyncio.run(wait_port(port))
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def worker_process(tree: Path, port: int, tls_ca: Path | None = None
                   ) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, str(HERE / "bench.py"), "--worker", str(port)],
                            env=child_env(tree, tls_ca))
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def mesh_round(tree: Path, jobs: int, calls: int, chains: int, db: str | None = None,
               managers: int = 1) -> dict[str, Any]:
    """(a)-(c) with ``managers`` managers on ``db`` (default: a fresh SQLite file); the client
    connects to the first manager, the worker to the last."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        ports = []
        for _ in range(managers):  # one at a time: each port is taken before the next is picked
            ports.append(free_port())
            linked = ("--advertise", f"127.0.0.1:{ports[-1]}") if managers > 1 else ()
            stack.enter_context(manager_process(tree, ports[-1], db or Path(tmp) / "bench.db",
                                                *linked))
        stack.enter_context(worker_process(tree, ports[-1]))
        result: dict[str, Any] = run_json(tree, "--client", str(ports[0]), "--jobs", str(jobs),
                                          "--calls", str(calls), "--chains", str(chains))
        return result


def postgres_round(url: str, managers: int, jobs: int, calls: int, chains: int
                   ) -> dict[str, Any]:
    """``mesh_round`` of this tree on PostgreSQL, in a schema of its own."""
    with postgres_schema(url) as schema_url:
        return mesh_round(TREE, jobs, calls, chains, db=schema_url, managers=managers)


def wss_round(tree: Path, jobs: int, calls: int, chains: int) -> dict[str, Any]:
    """``mesh_round`` with the manager serving TLS and the worker and client on wss."""
    try:
        import trustme
    except ImportError:
        raise SystemExit("bench.py: the wss figures need trustme (pip install -e '.[test]')") \
            from None
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        ca = trustme.CA()
        ca_file, cert_file = Path(tmp) / "ca.pem", Path(tmp) / "manager.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
        with manager_process(tree, port, Path(tmp) / "bench.db", "--ssl-certfile",
                             str(cert_file)), worker_process(tree, port, ca_file):
            result: dict[str, Any] = run_json(
                tree, "--client", str(port), "--jobs", str(jobs), "--calls", str(calls),
                "--chains", str(chains), tls_ca=ca_file)
            return result


async def fill_backlog(port: int, n: int) -> float:
    """Queue ``n`` jobs for ``idle`` (which nobody serves); seconds it took."""
    from easyjobs import EasyJobsClient

    async with EasyJobsClient("127.0.0.1", port, SECRET) as client:
        t0 = time.perf_counter()
        batch = 2000
        for start in range(0, n, batch):
            await asyncio.gather(*(client.submit(QUEUE, "idle", i)
                                   for i in range(start, min(n, start + batch))))
        return time.perf_counter() - t0


async def time_to_serve(port: int) -> float:
    """Seconds until a client gets an answer from the manager at ``port`` (a job listing)."""
    from easyjobs import EasyJobsClient

    t0 = time.perf_counter()
    await wait_port(port, 120)
    async with EasyJobsClient("127.0.0.1", port, SECRET) as client:
        await client.jobs(limit=1)
    return time.perf_counter() - t0


def backlog_run(tree: Path, n: int, jobs: int) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        with manager_process(tree, port, db) as manager:
            subprocess.run([sys.executable, str(HERE / "bench.py"), "--idle-worker", str(port)],
                           env=child_env(tree), check=True)
            with worker_process(tree, port):
                empty = run_json(tree, "--throughput", str(port), "--jobs", str(jobs))
                before = rss(manager.pid)
                filled_in = asyncio.run(fill_backlog(port, n))
                after = rss(manager.pid)
                beside = run_json(tree, "--throughput", str(port), "--jobs", str(jobs))
        restart = subprocess.Popen(
            [sys.executable, "-m", "easyjobs", "--log-level", "WARNING", "manager",
             "--host", "127.0.0.1", "--port", str(port), "--db", str(db)],
            env=child_env(tree), cwd=tree)
        try:
            serving_after = asyncio.run(time_to_serve(port))
        finally:
            restart.terminate()
            restart.wait(30)
    return {"queued_jobs": n, "submit_jobs_per_s": round(n / filled_in, 1),
            "rss_bytes_per_queued_job": round((after - before) / n, 1),
            "throughput_empty_jobs_per_s": empty, "throughput_beside_backlog_jobs_per_s": beside,
            "throughput_ratio": round(beside / empty, 3),
            "restart_serving_s": round(serving_after, 3)}


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--chains", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--backlog", type=int, default=0, help="queued jobs for the backlog run")
    parser.add_argument("--db", help="also run on this PostgreSQL (postgresql:// URL on loopback;"
                        " a fresh schema per run, dropped after)")
    parser.add_argument("--managers", type=int, choices=(1, 2), default=1,
                        help="with --db: 2 also runs client and worker on two managers")
    for hidden in ("--worker", "--idle-worker", "--client", "--throughput", "--echo-server",
                   "--route-server"):
        parser.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.managers == 2 and not args.db:
        parser.error("--managers 2 needs --db postgresql://... (the managers share its schema)")
    if args.db and (problem := check_postgres_url(args.db)):
        parser.error(problem)
    if args.worker or args.idle_worker:
        worker_main(args.worker or args.idle_worker, serve_idle=bool(args.idle_worker))
    elif args.client:
        print(json.dumps(asyncio.run(client_main(args.client, args.jobs, args.calls,
                                                 args.chains))))
    elif args.throughput:
        async def measure() -> float:
            from easyjobs import EasyJobsClient

            async with EasyJobsClient("127.0.0.1", args.throughput, SECRET) as client:
                await warm(client)
                return await throughput(client, args.jobs)
        print(json.dumps(asyncio.run(measure())))
    elif args.echo_server:
        echo_server(args.echo_server)
    elif args.route_server:
        route_server(args.route_server)
    else:
        report(args)


def report(args: argparse.Namespace) -> None:
    trees = {"this": TREE}
    if args.against:
        trees["against"] = args.against.resolve()
    server_version = None
    if args.db:  # a wrong URL fails now, not after the floors and the first rounds
        with postgres_admin(args.db) as admin:
            server_version = admin.info.server_version
    out: dict[str, Any] = {"trees": {name: str(tree) for name, tree in trees.items()},
                           "floors": floors()}
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    wss: list[dict[str, Any]] = []
    on_postgres: list[dict[str, Any]] = []
    cluster: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        for name, tree in trees.items():
            rounds[name].append(mesh_round(tree, args.jobs, args.calls, args.chains))
        wss.append(wss_round(TREE, args.jobs, args.calls, args.chains))
        if args.db:
            on_postgres.append(postgres_round(args.db, 1, args.jobs, args.calls, args.chains))
        if args.managers == 2:
            cluster.append(postgres_round(args.db, 2, args.jobs, args.calls, args.chains))
    out["medians"] = {name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                      for name, runs in rounds.items()}
    if args.against:
        this, other = out["medians"]["this"], out["medians"]["against"]
        out["this_over_against"] = {key: round(this[key] / other[key], 3) for key in this}
    plain = out["medians"]["this"]
    out["wss"] = beside(wss, plain, "wss_over_ws")
    targets = {}
    if on_postgres:
        out["postgres"] = {"server_version": server_version,
                           **beside(on_postgres, plain, "postgres_over_sqlite")}
        targets["postgres_throughput_over_sqlite"] = target(
            plain, "postgres", out["postgres"]["medians"], "throughput_jobs_per_s", ">=",
            THROUGHPUT_TARGET)
    if cluster:
        out["cluster"] = {"managers": 2, **beside(cluster, plain, "cluster_over_sqlite")}
        targets["cross_manager_roundtrip_p50_over_sqlite"] = target(
            plain, "cluster", out["cluster"]["medians"], "roundtrip_p50_ms", "<=",
            ROUNDTRIP_TARGET)
    if targets:
        out["targets"] = targets
    if args.backlog:
        out["backlog"] = {name: backlog_run(tree, args.backlog, args.jobs)
                          for name, tree in trees.items()}
    out["rounds"] = rounds
    print(json.dumps(out, indent=2))


def beside(runs: list[dict[str, Any]], plain: dict[str, Any], ratios: str) -> dict[str, Any]:
    """The medians of ``runs``, their ratios (under ``ratios``) to the plain SQLite medians of
    this tree in the same run, and the rounds."""
    medians = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    return {"medians": medians,
            ratios: {key: round(medians[key] / plain[key], 3) for key in plain},
            "rounds": runs}


def target(sqlite: dict[str, Any], name: str, other: dict[str, Any], key: str, sense: str,
           bound: float) -> dict[str, Any]:
    """One of the issue's aims: ``key`` of the ``name`` medians over SQLite's, against its
    bound (``sense`` is ">=" or "<=")."""
    ratio = round(other[key] / sqlite[key], 3)
    met = ratio >= bound if sense == ">=" else ratio <= bound
    return {"figure": key, "sqlite": sqlite[key], name: other[key], "ratio": ratio,
            "target": f"{sense} {bound}", "met": met}


if __name__ == "__main__":
    main()
