"""Certificates for TLS tests, made per test with ``trustme`` (a CA of our own, never a real
one), and a manager served over TLS by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from pathlib import Path

import trustme
import uvicorn

from easyjobs.manager.app import create_app
from easyjobs.tls import server_options

from .conftest import RunningManager
from .utils import SECRET, wait_until


@dataclass(frozen=True)
class Pki:
    """PEM files: ``ca`` signs ``server`` (for 127.0.0.1), ``wrong_name`` (for example.org),
    ``expired`` and ``client``; ``other_ca`` signs ``foreign_client``. Leaf files hold the key
    and the chain."""

    ca: Path
    other_ca: Path
    server: Path
    wrong_name: Path
    expired: Path
    client: Path
    foreign_client: Path


def make_pki(folder: Path) -> Pki:
    ca, other = trustme.CA(), trustme.CA()
    long_ago = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    leaves = {
        "server": ca.issue_cert("127.0.0.1"),
        "wrong_name": ca.issue_cert("example.org"),
        "expired": ca.issue_cert("127.0.0.1", not_before=long_ago,
                                 not_after=long_ago + datetime.timedelta(days=1)),
        "client": ca.issue_cert("worker.example.org"),
        "foreign_client": other.issue_cert("worker.example.org"),
    }
    paths = {"ca": folder / "ca.pem", "other_ca": folder / "other-ca.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    other.cert_pem.write_to_path(str(paths["other_ca"]))
    for name, leaf in leaves.items():
        paths[name] = folder / f"{name}.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(paths[name]))
    return Pki(**paths)


async def start_tls_manager(db: Path, certfile: Path | None, ca_certs: Path | None = None,
                            require_client_cert: bool = False) -> RunningManager:
    """The standalone manager app over TLS (plain when ``certfile`` is None), on port 0."""
    tls = server_options(str(certfile) if certfile else None, None,
                         str(ca_certs) if ca_certs else None, require_client_cert)
    config = uvicorn.Config(create_app(SECRET, str(db)), host="127.0.0.1", port=0,
                            log_level="warning", lifespan="on", **tls)
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    await wait_until(lambda: server.started or task.done(), what="uvicorn to start")
    if task.done():
        task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningManager("127.0.0.1", port, db, server, task)
