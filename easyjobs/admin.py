"""Admin calls to a manager's HTTP API from the command line (``easyjobs credentials``).

A blocking HTTP/1.1 request with the standard library, made to the first manager of the list
that answers, over TLS when its address says so (with the same CA and client certificate
options as the WebSocket links). The secret goes in the ``Authorization`` header only, and in
plain text only to a manager on this machine (loopback).
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from .addresses import ManagerAddress, resolve_managers
from .tls import client_tls, tls_failure


class AdminError(Exception):
    """The manager refused the request, or no manager answered: the text says which."""


def call_manager(where: dict[str, Any], secret: bytes, method: str, path: str,
                 body: Any = None, *, timeout: float) -> Any:
    """``method path`` on the first manager that answers; its JSON answer."""
    addresses = resolve_managers(where["managers"], where["host"], where["port"],
                                 tls=where["tls"], pair="--host/--port")
    tls = client_tls(addresses, ca_file=where["ca_file"], client_cert=where["client_cert"],
                     client_key=where["client_key"])
    for address in addresses:
        if not address.tls and not _loopback(address.host):
            raise AdminError(
                f"not sending the manager secret to {address} in the clear: reach it over TLS "
                f"(wss://{address.netloc} or --tls), or run this on the manager's machine "
                "(127.0.0.1)")
    failures = []
    for address in addresses:
        try:
            return _request(address, tls.context if tls else None, secret, method, path, body,
                            timeout)
        except urllib.error.HTTPError as exc:
            raise AdminError(f"the manager at {address} answered {exc.code}: "
                             f"{_message(exc)}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                raise AdminError(str(tls_failure(address, exc.reason))) from None
            failures.append(f"{address} ({exc.reason})")
        except TimeoutError:
            failures.append(f"{address} (no answer within {timeout:g}s)")
    raise AdminError(f"no manager answered: {', '.join(failures)}")


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _request(address: ManagerAddress, context: ssl.SSLContext | None, secret: bytes,
             method: str, path: str, body: Any, timeout: float) -> Any:
    url = f"{'https' if address.tls else 'http'}://{address.netloc}{quote(path)}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": "Bearer " + secret.decode("utf-8", "replace"),
        "Content-Type": "application/json"})
    # No proxy from the environment: the secret goes to the manager and nowhere else.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    with opener.open(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def _message(exc: urllib.error.HTTPError) -> str:
    """The ``error.message`` of the manager's JSON answer, or the HTTP reason."""
    try:
        return str(json.loads(exc.read())["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(exc.reason)
