"""The ``easyjobs`` command: a thin shell over the library, and the only code that owns a process.

    easyjobs manager [--host H] [--port P] [--db PATH] [--secret-file F] [--max-connections N]
                     [--ssl-certfile F --ssl-keyfile F [--ssl-ca-certs F --require-client-cert]]
    easyjobs worker MODULE:ATTR [--managers H:P,... | --host H --port P] [--secret-file F]
    easyjobs call QUEUE TASK [--args JSON] [--kwargs JSON] [--no-wait] [--timeout S]
    easyjobs jobs [--queue Q] [--task T] [--status S] [--limit N] [--json]
    easyjobs job JOB_ID [--json] | easyjobs cancel JOB_ID | easyjobs schedules [--json]
    easyjobs credentials add NAME --role worker|client|admin [--queues Q,...]
    easyjobs credentials list | easyjobs credentials revoke NAME

Secrets come from ``EASYJOBS_SECRET`` or ``--secret-file``, never from the command line. Every
client command takes ``--managers H:P,...`` (or ``--host``/``--port``), ``--tls``,
``--ca-file``, ``--client-cert``/``--client-key`` and ``--timeout S``, and exits 1, naming the
address, when no manager answers. ``easyjobs worker`` hands its flags to a worker built
without them (through the same variables). ``--log-level`` goes before or after the subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import errno
import importlib
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import jsonlog
from .errors import ConfigurationError, EasyJobsError, StoreError, TaskFailed
from .jobs import JobStatus
from .jsonvalues import to_json
from .logs import LOG_FORMAT

if TYPE_CHECKING:
    from .client import EasyJobsClient

log = logging.getLogger("easyjobs.cli")

CLIENT_TIMEOUT = 10.0
"""Seconds a client command waits for the manager when ``--timeout`` is not given."""


def _secret_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secret-file", help="file holding the manager secret "
                        "(default: env EASYJOBS_SECRET)")


def _bind_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (env EASYJOBS_HOST, default "
                        "127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (env EASYJOBS_PORT, "
                        "default 8220)")
    _secret_arg(parser)


def _managers_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--managers", metavar="H:P,...",
                        help="managers to try in order: host:port, [::1]:port, ws://host:port "
                        "or wss://host:port, comma-separated (env EASYJOBS_MANAGERS)")


def _connection_args(parser: argparse.ArgumentParser) -> None:
    _managers_arg(parser)
    parser.add_argument("--host", help="one manager's host, instead of --managers "
                        "(env EASYJOBS_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="that manager's port (env EASYJOBS_PORT, "
                        "default 8220)")
    _secret_arg(parser)
    parser.add_argument("--tls", action="store_true",
                        help="reach the managers over TLS (as if written wss://)")
    parser.add_argument("--ca-file", help="PEM file of the CAs that sign the managers' "
                        "certificates (env EASYJOBS_TLS_CA; default: the system's)")
    parser.add_argument("--client-cert", help="PEM certificate to present to managers that "
                        "require one (mutual TLS); it may hold the key too")
    parser.add_argument("--client-key", help="PEM key of --client-cert, if in a file of its own")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="easyjobs", description="Distributed asyncio jobs: manager, workers and calls.")
    _log_level_arg(parser, os.environ.get("EASYJOBS_LOG_LEVEL"))
    _log_format_arg(parser, os.environ.get("EASYJOBS_LOG_FORMAT") or "text")
    commands = parser.add_subparsers(dest="command", required=True)

    manager = commands.add_parser("manager", help="run a standalone manager")
    _bind_args(manager)
    manager.add_argument("--db", default=None,
                         help="SQLite file or postgresql:// URL (env EASYJOBS_DB or DB_PATH, "
                         "default easyjobs.db)")
    manager.add_argument("--heartbeat", type=float, default=None,
                         help="heartbeat interval in seconds (default 1.0)")
    manager.add_argument("--api-token-file", default=None,
                         help="extra bearer tokens for the HTTP API, one per line")
    manager.add_argument("--metrics-public", action="store_true",
                         help="serve /metrics without a token")
    manager.add_argument("--handshake-timeout", type=float, default=None,
                         help="seconds a connection has to send its request and to "
                         "authenticate (env EASYJOBS_HANDSHAKE_TIMEOUT, default 5)")
    manager.add_argument("--max-connections", type=int, default=None,
                         help="connections served at once, more get HTTP 503 "
                         "(env EASYJOBS_MAX_CONNECTIONS, default 1000)")
    manager.add_argument("--max-unauthenticated", type=int, default=None,
                         help="connections still sending their request or authenticating, "
                         "more get HTTP 503 (env EASYJOBS_MAX_UNAUTHENTICATED, default 100)")
    manager.add_argument("--max-backlog", type=int, default=None,
                         help="bytes held for one peer that does not read before it is "
                         "dropped (env EASYJOBS_MAX_BACKLOG, default 4194304)")
    manager.add_argument("--advertise", metavar="HOST:PORT", default=None,
                         help="where the other managers on the same PostgreSQL database reach "
                         "this one (env EASYJOBS_ADVERTISE; default: --host and --port, "
                         "unless --host is a wildcard such as 0.0.0.0, or loopback)")
    manager.add_argument("--ssl-certfile", help="PEM certificate: serve https and wss")
    manager.add_argument("--ssl-keyfile", help="PEM key of --ssl-certfile (unencrypted), if "
                         "in a file of its own")
    manager.add_argument("--ssl-ca-certs", help="PEM file of the CAs whose client "
                         "certificates are accepted")
    manager.add_argument("--require-client-cert", action="store_true",
                         help="refuse peers without a client certificate signed by "
                         "--ssl-ca-certs (mutual TLS)")

    worker = commands.add_parser("worker", help="run the EasyJobsWorker object MODULE:ATTR")
    worker.add_argument("target", metavar="MODULE:ATTR")
    worker.add_argument("--grace", type=float, default=None,
                        help="seconds to let running jobs finish on SIGINT/SIGTERM")
    _managers_arg(worker)
    worker.add_argument("--host", help="one manager's host, instead of --managers "
                        "(env EASYJOBS_HOST, default 127.0.0.1)")
    worker.add_argument("--port", type=int, help="that manager's port (env EASYJOBS_PORT, "
                        "default 8220)")
    _secret_arg(worker)

    call = commands.add_parser("call", help="run a task and print its result as JSON")
    _connection_args(call)
    call.add_argument("queue")
    call.add_argument("task")
    call.add_argument("--args", default="[]", help="positional arguments as a JSON list")
    call.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    call.add_argument("--no-wait", action="store_true", help="print the job id and return")
    call.add_argument("--timeout", type=float, default=None,
                      help="seconds to wait for the manager and the result (default: "
                      f"{CLIENT_TIMEOUT:g}s for the manager, then the result for ever)")

    jobs = commands.add_parser("jobs", help="list recent jobs, newest first, with their links")
    _connection_args(jobs)
    jobs.add_argument("--queue")
    jobs.add_argument("--task")
    jobs.add_argument("--status", choices=[s.value for s in JobStatus])
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true", help="print the records as JSON lines")
    _timeout_arg(jobs)

    job = commands.add_parser("job", help="print one job's record as JSON")
    _connection_args(job)
    job.add_argument("job_id")
    _json_arg(job)
    _timeout_arg(job)

    cancel = commands.add_parser("cancel", help="cancel a job that has not finished")
    _connection_args(cancel)
    cancel.add_argument("job_id")
    _timeout_arg(cancel)

    schedules = commands.add_parser("schedules", help="list cron schedules and next fire times")
    _connection_args(schedules)
    _json_arg(schedules)
    _timeout_arg(schedules)

    credentials = commands.add_parser(
        "credentials", help="add, list or revoke named credentials (needs the manager secret)")
    verbs = credentials.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="make a credential and print its token, once")
    add.add_argument("name", help="1 to 64 letters, digits, '-' or '_'")
    add.add_argument("--role", required=True, choices=("worker", "client", "admin"))
    add.add_argument("--queues", help="the queues it may use, comma-separated (not for admin)")
    verbs.add_parser("list", help="every credential: name, role, queues (never a secret)")
    revoke = verbs.add_parser("revoke", help="revoke a credential; its links close at once")
    revoke.add_argument("name")
    for verb in verbs.choices.values():
        _connection_args(verb)
        _timeout_arg(verb)
    # Global options work after the subcommand too; given there, they win.
    for command in (*commands.choices.values(), *verbs.choices.values()):
        _log_level_arg(command, argparse.SUPPRESS)
        _log_format_arg(command, argparse.SUPPRESS)
    return parser


def _log_level_arg(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument("--log-level", default=default,
                        help="logging level (env EASYJOBS_LOG_LEVEL; default INFO for manager "
                        "and worker, WARNING for the client commands)")


def _log_format_arg(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument("--log-format", choices=("text", "json"), default=default,
                        help="text lines, or one JSON object a line with job fields "
                        "(env EASYJOBS_LOG_FORMAT)")


def _json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON line, times in seconds "
                        "since the epoch (default: indented, times in ISO 8601 UTC)")


def _timeout_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds to wait for the manager (default {CLIENT_TIMEOUT:g})")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level or ("INFO" if args.command in ("manager", "worker") else "WARNING")
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=LOG_FORMAT)
    if args.log_format == "json":
        jsonlog.use_json()
    try:
        if args.command == "manager":
            return _manager(args)
        if args.command == "worker":
            return asyncio.run(_worker(args))
        if args.command == "credentials":
            return _credentials(args)
        return asyncio.run(_client_command(args))
    except ConfigurationError as exc:
        print(f"easyjobs: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 130


async def _check_store(db: str | None) -> None:
    """Open and close the manager's store once: a wrong or unreachable one fails here."""
    from .store import open_store, store_location

    store = open_store(store_location(db))
    try:
        await store.open()
    finally:
        await store.close()


def _manager(args: argparse.Namespace) -> int:
    import uvicorn

    from .config import read_host_port
    from .manager.app import connection_limits, create_app, http_guard_options
    from .manager.guard import guarded_http, guarded_websockets
    from .protocol.frames import DEFAULT_MAX_MESSAGE
    from .protocol.session import CLOSE_GRACE
    from .tls import server_options

    tls = server_options(args.ssl_certfile, args.ssl_keyfile, args.ssl_ca_certs,
                         args.require_client_cert)
    env_host, env_port = read_host_port()
    host = args.host or env_host or "127.0.0.1"
    port = args.port if args.port is not None else env_port or 8220
    limits = connection_limits(
        handshake_timeout=args.handshake_timeout, max_backlog=args.max_backlog,
        max_connections=args.max_connections, max_unauthenticated=args.max_unauthenticated)
    # The port first: a busy one fails before anything is said to listen or a store is made.
    sock = _bind(host, port)
    try:
        app = create_app(db=args.db, secret_file=args.secret_file, heartbeat=args.heartbeat,
                         api_token_file=args.api_token_file,
                         metrics_public=True if args.metrics_public else None,
                         advertise=_advertised(args.advertise, host, sock.getsockname()[1],
                                               bool(tls)),
                         **limits)
    except BaseException:
        sock.close()
        raise
    try:
        asyncio.run(_check_store(args.db))
    except StoreError as exc:  # one line, before uvicorn's start-up traceback would say it
        sock.close()
        log.error("the manager cannot start: %s", exc)
        return 1
    base = f"{'https' if tls else 'http'}://{_netloc(host, sock.getsockname()[1])}"
    log.info("manager listening on %s (dashboard %s/dashboard, API %s/openapi.json, "
             "metrics %s/metrics)", base, base, base, base)
    # uvicorn reads whole WebSocket messages before the session's own limit applies; open
    # dashboard streams (/events) must not hold a shutdown up for long; the guards close
    # connections that never send their request and sockets that never drain.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                            ws_max_size=2 * DEFAULT_MAX_MESSAGE, timeout_graceful_shutdown=3,
                            http=guarded_http(**http_guard_options(limits)),
                            ws=guarded_websockets(CLOSE_GRACE), **tls)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises SIGINT once it has shut down cleanly
        pass
    return 0 if server.started else 1


def _advertised(given: str | None, host: str, port: int, tls: bool) -> str | None:
    """The URL the other managers reach this one at: ``--advertise`` (or its variable), else
    where it listens, unless that is every interface or loopback, which would tell another
    manager nothing (or lead it to itself)."""
    from .addresses import advertised_url
    from .config import read_advertise

    given = given or read_advertise()
    if given is not None:
        return advertised_url(given, tls=tls)
    try:
        address = ipaddress.ip_address(host)
        local = address.is_loopback or address.is_unspecified
    except ValueError:  # a name
        local = host in ("", "localhost")
    return None if local else advertised_url(_netloc(host, port), tls=tls)


def _bind(host: str, port: int) -> socket.socket:
    """The manager's listening socket, bound; a port in use is a one-line error."""
    # IPPROTO_TCP spelled out: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say
    # so, and accepted ones inherit it; without it every small frame waited ~40 ms for an ACK.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = ("another process (another manager?) listens there: stop it or pick another "
                "--port" if exc.errno == errno.EADDRINUSE else "check --host and --port")
        raise ConfigurationError(
            f"the manager cannot listen on {_netloc(host, port)}: {exc.strerror}; {hint}"
        ) from None
    sock.listen(2048)  # uvicorn's backlog; peers wait in it while the manager starts
    return sock


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _worker(args: argparse.Namespace) -> int:
    from .addresses import resolve_managers
    from .config import read_secret
    from .workers.worker import EasyJobsWorker

    module_name, _, attr = args.target.partition(":")
    if not attr:
        raise ConfigurationError("worker target must be MODULE:ATTR, e.g. myapp.jobs:worker")
    _one_form(args)
    # A worker built without addresses or secret reads them from here when its module is
    # imported: each flag replaces its variable.
    managers = None
    if args.managers is not None:
        managers = resolve_managers(args.managers, None, None)
        os.environ["EASYJOBS_MANAGERS"] = args.managers
    elif args.host is not None or args.port is not None:
        os.environ.pop("EASYJOBS_MANAGERS", None)
        if args.host is not None:
            os.environ["EASYJOBS_HOST"] = args.host
        if args.port is not None:
            os.environ["EASYJOBS_PORT"] = str(args.port)
        managers = resolve_managers(None, None, None)
    if args.secret_file is not None:
        os.environ["EASYJOBS_SECRET_FILE"] = args.secret_file  # read before EASYJOBS_SECRET
    sys.path.insert(0, os.getcwd())
    try:
        worker = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load {args.target}: {exc}") from None
    if not isinstance(worker, EasyJobsWorker):
        raise ConfigurationError(f"{args.target} is not an EasyJobsWorker")
    if managers is not None and worker.managers != managers:
        raise ConfigurationError(
            f"{args.target} names its managers itself; drop --managers/--host/--port, or build "
            "it without manager_host/manager_port/managers so that it takes them from the "
            "command line")
    if args.secret_file is not None and not worker.uses_secret(
            read_secret(secret_file=args.secret_file)):
        raise ConfigurationError(
            f"{args.target} passes its own manager_secret, which --secret-file does not "
            "replace; drop --secret-file, or build it without manager_secret so that it reads "
            "the secret from there")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.start()
    except EasyJobsError as exc:
        log.error("%s", exc)
        return 1
    closed = loop.create_task(worker.wait_closed())
    stopping = loop.create_task(stop.wait())
    try:
        if not worker.connected:  # the worker warned and keeps trying in the background
            connected = loop.create_task(worker.wait_connected())
            await asyncio.wait({connected, closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
            connected.cancel()
        if not (closed.done() or stopping.done()):  # connected
            log.info("worker %s running; SIGINT or SIGTERM stops it", worker.name)
            await asyncio.wait({closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if closed.done():  # the link failed for good (logged): nothing more to do here
        failed = closed.exception() is not None
        await worker.stop(0)
        return 1 if failed else 0
    closed.cancel()
    log.info("stopping: draining running jobs")
    await worker.stop(args.grace)
    return 0


async def _client_command(args: argparse.Namespace) -> int:
    """Run one of the commands that talk to a manager as a client."""
    from .client import EasyJobsClient
    from .config import read_secret

    command = {"call": _call, "jobs": _jobs, "job": _job, "cancel": _cancel,
               "schedules": _schedules}[args.command]
    secret = read_secret(secret_file=args.secret_file)
    timeout = CLIENT_TIMEOUT if args.timeout is None else args.timeout
    args.deadline = asyncio.get_running_loop().time() + timeout  # for call's result
    client = EasyJobsClient(**_where(args), secret=secret, connect_timeout=timeout,
                            request_timeout=timeout)
    try:
        async with client:
            return await command(client, args)
    except ConfigurationError:
        raise  # a usage error: exit code 2
    except TaskFailed as exc:
        print(f"{exc.type}: {exc.message}\n{exc.traceback}".rstrip(), file=sys.stderr)  # noqa: T201
        return 1
    except EasyJobsError as exc:
        print(f"easyjobs: {type(exc).__name__}: {exc}", file=sys.stderr)  # noqa: T201
        return 1


def _credentials(args: argparse.Namespace) -> int:
    """``easyjobs credentials``: the manager's HTTP API, with the manager secret as token."""
    from .admin import AdminError, call_manager
    from .config import read_secret

    where = _where(args)
    secret = read_secret(secret_file=args.secret_file)
    timeout = CLIENT_TIMEOUT if args.timeout is None else args.timeout
    request: tuple[str, str, dict[str, Any] | None]
    if args.verb == "add":
        queues = None if args.queues is None else [
            q.strip() for q in args.queues.split(",") if q.strip()]
        request = ("POST", "/credentials", {"name": args.name, "role": args.role,
                                            "queues": queues})
    elif args.verb == "list":
        request = ("GET", "/credentials", None)
    else:
        request = ("DELETE", f"/credentials/{args.name}", None)
    try:
        answer = call_manager(where, secret, *request, timeout=timeout)
    except AdminError as exc:
        print(f"easyjobs: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    if args.verb == "add":
        print(f"credential {answer['name']!r} ({answer['role']}"  # noqa: T201
              f"{', queues ' + ', '.join(answer['queues']) if answer['queues'] else ''}); its "
              "secret, shown only now (give it as EASYJOBS_SECRET or secret=...):",
              file=sys.stderr)
        print(answer["token"])  # noqa: T201
    elif args.verb == "list":
        for entry in answer["credentials"]:
            scope = ",".join(entry["queues"]) if entry["queues"] is not None else "*"
            print(f"{entry['name']}\t{entry['role']}\t{scope}")  # noqa: T201
    else:
        print(f"revoked {answer['revoked']}", file=sys.stderr)  # noqa: T201
    return 0


def _where(args: argparse.Namespace) -> dict[str, Any]:
    """The client's managers and TLS options from the flags (the environment fills in the
    rest: see ``easyjobs.addresses``)."""
    _one_form(args)
    return {"managers": args.managers, "host": args.host, "port": args.port, "tls": args.tls,
            "ca_file": args.ca_file, "client_cert": args.client_cert,
            "client_key": args.client_key}


def _one_form(args: argparse.Namespace) -> None:
    if args.managers is not None and (args.host is not None or args.port is not None):
        raise ConfigurationError("give --managers or --host/--port, not both: write "
                                 "--managers host:port,... alone")


async def _call(client: EasyJobsClient, args: argparse.Namespace) -> int:
    try:
        call_args = json.loads(args.args)
        call_kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"--args/--kwargs must be JSON: {exc}") from None
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        raise ConfigurationError("--args must be a JSON list and --kwargs a JSON object")
    job = await client.submit(args.queue, args.task, *call_args, **call_kwargs)
    if args.no_wait:
        _print_json({"job_id": job.id})
        return 0
    left = None
    if args.timeout is not None:  # the whole command keeps within --timeout
        left = max(0.0, args.deadline - asyncio.get_running_loop().time())
    _print_json(await job.result(left))
    return 0


async def _jobs(client: EasyJobsClient, args: argparse.Namespace) -> int:
    records, _ = await client.jobs(queue=args.queue, task=args.task, status=args.status,
                                  limit=args.limit)
    if args.json:
        for record in records:
            _print_json(record)
        return 0
    print(f"{'id':32}  {'queue':10} {'task':24} {'status':9} {'att':>3}  links")  # noqa: T201
    for r in records:
        links = [f"{name}={r[key]}" for name, key in
                 (("parent", "parent"), ("on_failure", "on_failure_job"),
                  ("handles", "handler_for")) if r.get(key)]
        if r.get("dependencies"):
            links.append(f"deps={','.join(r['dependencies'])}")
        print(f"{r['id']:32}  {r['queue']:10} {r['task']:24} {r['status']:9} "  # noqa: T201
              f"{r['attempts']:>3}  {' '.join(links)}")
    return 0


async def _job(client: EasyJobsClient, args: argparse.Namespace) -> int:
    record = await client.job(args.job_id)
    if args.json:
        _print_json(record)
    else:
        print(json.dumps(to_json(_readable_times(record)), indent=2))  # noqa: T201
    return 0


async def _cancel(client: EasyJobsClient, args: argparse.Namespace) -> int:
    record = await client.cancel(args.job_id)
    _print_json({"job_id": record["id"], "status": record["status"]})
    return 0


async def _schedules(client: EasyJobsClient, args: argparse.Namespace) -> int:
    for entry in await client.schedules():
        _print_json(entry if args.json else _readable_times(entry))
    return 0


TIME_KEYS = ("next_fire", "last_fire")
"""Keys, besides ``*_at``, whose values are seconds since the epoch."""


def _readable_times(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its times in ISO 8601, UTC (``2026-01-01T09:00:00.000Z``)."""
    return {key: _iso(value) if (key.endswith("_at") or key in TIME_KEYS)
            and isinstance(value, int | float) and not isinstance(value, bool) else value
            for key, value in record.items()}


def _iso(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _print_json(value: Any) -> None:
    print(json.dumps(to_json(value)))  # noqa: T201
