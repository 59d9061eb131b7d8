"""Where workers and clients find managers: a list of addresses, parsed once, checked strictly.

An entry is ``host:port``, ``[::1]:port``, ``ws://host:port`` or ``wss://host:port`` (``wss``:
TLS). The list comes from ``managers=[...]`` (or one comma-separated string, as the CLI's
``--managers`` and ``EASYJOBS_MANAGERS`` give it), else from the older ``manager_host`` /
``manager_port`` pair (a list of one), else from ``EASYJOBS_MANAGERS``, else from
``EASYJOBS_HOST`` / ``EASYJOBS_PORT`` (either may be left out), else 127.0.0.1:8220.
Bad input is a ``ConfigurationError`` that says what to write instead, never a retry loop.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .config import read_host_port, read_managers
from .errors import ConfigurationError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8220

_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]+")
_EXAMPLE = "e.g. 10.0.0.1:8220, [::1]:8220 or wss://jobs.example.com:8220"


@dataclass(frozen=True, slots=True)
class ManagerAddress:
    """One manager: ``host`` (an IPv6 address without its brackets), ``port``, and ``tls``."""

    host: str
    port: int
    tls: bool = False

    @property
    def netloc(self) -> str:
        """``host:port`` as written in a URI (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def scheme(self) -> str:
        return "wss" if self.tls else "ws"

    def __str__(self) -> str:
        return self.netloc


def parse_manager(entry: str, *, tls: bool = False) -> ManagerAddress:
    """One entry of a managers list; ``tls`` applies to an entry written without a scheme."""
    text = entry.strip()
    if not text:
        raise ConfigurationError(f"an entry of managers is empty: write host:port, {_EXAMPLE}")
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme not in ("ws", "wss"):
            raise ConfigurationError(
                f"manager {text!r}: unknown scheme {scheme!r}; write ws://host:port, "
                "wss://host:port (TLS) or plain host:port")
        if scheme == "ws" and tls:
            raise ConfigurationError(
                f"manager {text!r} says ws:// (no TLS) but tls=True was given: write "
                f"wss://{rest} or drop tls")
        tls = scheme == "wss"
    else:
        rest = text
    if "@" in rest:
        raise ConfigurationError(
            f"manager {_redacted(text)}: no credentials in a manager address; the secret "
            "goes in secret= / EASYJOBS_SECRET")
    if "/" in rest or "?" in rest or "#" in rest:
        raise ConfigurationError(
            f"manager {text!r}: write host:port without a path (the link adds its own)")
    host, port = _split_host_port(text, rest)
    return ManagerAddress(host, port, tls)


def advertised_url(entry: str, *, tls: bool = False) -> str:
    """A manager's advertised address as a URL (``ws://`` or ``wss://``, ``tls`` for an entry
    written without a scheme); ``ConfigurationError`` naming what is wrong."""
    address = parse_manager(entry, tls=tls)
    return f"{address.scheme}://{address.netloc}"


def check_host_port(host: str, port: int, *, tls: bool = False) -> ManagerAddress:
    """The address of the older ``manager_host`` / ``manager_port`` pair, checked."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not bare or not _valid_host(bare):
        raise ConfigurationError(
            f"cannot connect to host {host!r} port {port}: not a host name or IP address")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigurationError(
            f"cannot connect to host {host!r} port {port}: the port must be 1-65535")
    return ManagerAddress(bare, port, tls)


def resolve_managers(
    managers: str | Sequence[str] | None,
    host: str | None,
    port: int | None,
    *,
    tls: bool = False,
    pair: str = "manager_host/manager_port",
) -> tuple[ManagerAddress, ...]:
    """The managers to try, in order, from whichever form the caller used (see the module).

    ``pair`` names the older host and port options in messages (the client's are host/port).
    """
    if managers is not None and (host is not None or port is not None):
        raise ConfigurationError(
            f"give managers=[...] or {pair}, not both: write managers=['host:port', ...] "
            "alone (a list of one is fine)")
    if managers is None and host is None and port is None:
        managers = read_managers()
        host, port = read_host_port()
        if managers is not None and (host is not None or port is not None):
            raise ConfigurationError(
                "EASYJOBS_MANAGERS and EASYJOBS_HOST/EASYJOBS_PORT are both set: keep "
                "EASYJOBS_MANAGERS alone (host:port,...)")
    if managers is None:
        return (check_host_port(DEFAULT_HOST if host is None else host,
                                DEFAULT_PORT if port is None else port, tls=tls),)
    entries = managers.split(",") if isinstance(managers, str) else list(managers)
    if not entries:
        raise ConfigurationError(f"managers is empty: name at least one, {_EXAMPLE}")
    addresses: list[ManagerAddress] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ConfigurationError(
                f"managers holds {entry!r}: each entry is a string like '10.0.0.1:8220'")
        address = parse_manager(entry, tls=tls)
        if any(known.netloc == address.netloc for known in addresses):
            raise ConfigurationError(f"managers lists {address} twice: name each one once")
        addresses.append(address)
    return tuple(addresses)


def describe(addresses: Sequence[ManagerAddress]) -> str:
    """The addresses for a message: ``h:p``, or ``any of h1:p1, h2:p2``."""
    names = ", ".join(str(address) for address in addresses)
    return names if len(addresses) == 1 else f"any of {names}"


def _split_host_port(text: str, rest: str) -> tuple[str, int]:
    if rest.startswith("["):
        host, close, tail = rest[1:].partition("]")
        if not close or not _is_ipv6(host):
            raise ConfigurationError(
                f"manager {text!r}: write an IPv6 address in brackets, e.g. [::1]:8220")
        if not tail.startswith(":"):
            raise ConfigurationError(f"manager {text!r}: no port; write [{host}]:8220")
        digits = tail[1:]
    else:
        if rest.count(":") > 1:
            raise ConfigurationError(
                f"manager {text!r}: write an IPv6 address in brackets, e.g. [::1]:8220")
        host, colon, digits = rest.partition(":")
        if not colon:
            raise ConfigurationError(f"manager {text!r}: no port; write {rest}:8220")
        if not host or not _valid_host(host):
            raise ConfigurationError(
                f"manager {text!r}: {host!r} is not a host name or IP address; {_EXAMPLE}")
    if not digits.isdigit() or not 0 < int(digits) < 65536:
        raise ConfigurationError(
            f"manager {text!r}: the port must be a number 1-65535; {_EXAMPLE}")
    return host, int(digits)


def _valid_host(host: str) -> bool:
    return _is_ipv6(host) if ":" in host else _HOSTNAME.fullmatch(host) is not None


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _redacted(text: str) -> str:
    """The entry with whatever precedes ``@`` hidden: it may be a password."""
    scheme, sep, _ = text.rpartition("://")
    return f"{scheme}{sep}***@{text.rpartition('@')[2]}"
