"""Manager addresses: every accepted form parses to (host, port, tls); every bad entry, and the
two forms given together, is a ConfigurationError that says what to write instead."""

from __future__ import annotations

import pytest

from easyjobs import ConfigurationError, EasyJobsClient, EasyJobsWorker
from easyjobs.addresses import ManagerAddress, describe, parse_manager, resolve_managers

from .utils import SECRET


@pytest.mark.parametrize(("entry", "expected"), [
    ("10.0.0.1:8220", ManagerAddress("10.0.0.1", 8220)),
    ("jobs.example.com:1", ManagerAddress("jobs.example.com", 1)),
    ("  localhost:65535 ", ManagerAddress("localhost", 65535)),
    ("[::1]:8220", ManagerAddress("::1", 8220)),
    ("ws://10.0.0.1:8220", ManagerAddress("10.0.0.1", 8220)),
    ("wss://10.0.0.1:8443", ManagerAddress("10.0.0.1", 8443, tls=True)),
    ("wss://[fe80::1]:8443", ManagerAddress("fe80::1", 8443, tls=True)),
])
def test_accepted_forms(entry: str, expected: ManagerAddress) -> None:
    """host:port, [v6]:port, ws:// and wss:// (TLS)."""
    assert parse_manager(entry) == expected


def test_tls_applies_to_entries_without_a_scheme() -> None:
    """tls=True turns host:port into a TLS address; wss:// is TLS whatever tls says."""
    assert parse_manager("h:1", tls=True) == ManagerAddress("h", 1, tls=True)
    assert parse_manager("wss://h:1", tls=False).tls


def test_netloc_and_scheme() -> None:
    """IPv6 hosts are bracketed again where an address is written out."""
    address = parse_manager("wss://[::1]:8443")
    assert (address.netloc, address.scheme, str(address)) == ("[::1]:8443", "wss", "[::1]:8443")


@pytest.mark.parametrize(("entry", "advice"), [
    ("", "is empty: write host:port"),
    ("   ", "is empty: write host:port"),
    ("10.0.0.1", "no port; write 10.0.0.1:8220"),
    ("10.0.0.1:", "the port must be a number 1-65535"),
    ("10.0.0.1:0", "the port must be a number 1-65535"),
    ("10.0.0.1:70000", "the port must be a number 1-65535"),
    ("10.0.0.1:http", "the port must be a number 1-65535"),
    (":8220", "'' is not a host name or IP address"),
    ("bad host:8220", "'bad host' is not a host name"),
    ("::1:8220", "write an IPv6 address in brackets, e.g. [::1]:8220"),
    ("[::1]", "no port; write [::1]:8220"),
    ("[nope]:8220", "write an IPv6 address in brackets"),
    ("http://h:8220", "unknown scheme 'http'; write ws://host:port, wss://host:port"),
    ("wss://h:8220/ws/jobs", "without a path"),
])
def test_malformed_entries_say_what_to_write(entry: str, advice: str) -> None:
    """Each bad entry names itself (quoted) and the form to use."""
    with pytest.raises(ConfigurationError) as raised:
        parse_manager(entry)
    assert advice in str(raised.value)


def test_credentials_in_an_entry_are_refused_and_not_repeated() -> None:
    """user:password@host is refused without echoing the password."""
    with pytest.raises(ConfigurationError, match="no credentials") as raised:
        parse_manager("wss://admin:hunter2@h:8443")
    assert "hunter2" not in str(raised.value) and "h:8443" in str(raised.value)


def test_ws_scheme_with_tls_true_is_a_contradiction() -> None:
    with pytest.raises(ConfigurationError, match="write wss://h:1 or drop tls"):
        parse_manager("ws://h:1", tls=True)


def test_resolve_takes_a_list_or_a_comma_separated_string() -> None:
    """The list keeps its order; a string is split on commas (as --managers gives it)."""
    expected = (ManagerAddress("a", 1), ManagerAddress("b", 2, tls=True))
    assert resolve_managers(["a:1", "wss://b:2"], None, None) == expected
    assert resolve_managers("a:1, wss://b:2", None, None) == expected


def test_the_older_pair_is_a_list_of_one() -> None:
    """manager_host/manager_port (either may be left out) give one address."""
    assert resolve_managers(None, "0.0.0.0", 8220) == (ManagerAddress("0.0.0.0", 8220),)
    assert resolve_managers(None, None, 9000) == (ManagerAddress("127.0.0.1", 9000),)
    assert resolve_managers(None, "::1", None) == (ManagerAddress("::1", 8220),)


def test_nothing_given_reads_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EASYJOBS_MANAGERS when no address is given; 127.0.0.1:8220 when it is unset too."""
    monkeypatch.delenv("EASYJOBS_MANAGERS", raising=False)
    assert resolve_managers(None, None, None) == (ManagerAddress("127.0.0.1", 8220),)
    monkeypatch.setenv("EASYJOBS_MANAGERS", "a:1,b:2")
    assert resolve_managers(None, None, None) == (ManagerAddress("a", 1), ManagerAddress("b", 2))
    assert resolve_managers(None, "c", 3) == (ManagerAddress("c", 3),)  # given beats the env


@pytest.mark.parametrize(("managers", "advice"), [
    ([], "managers is empty"),
    ("", "an entry of managers is empty"),
    ("a:1,,b:2", "an entry of managers is empty"),
    (["a:1", "a:1"], "lists a:1 twice"),
    ([8220], "each entry is a string"),
])
def test_bad_lists(managers: object, advice: str) -> None:
    with pytest.raises(ConfigurationError, match=advice):
        resolve_managers(managers, None, None)  # type: ignore[arg-type]


def test_both_forms_at_once_are_refused() -> None:
    """managers=[...] with manager_host or manager_port: say to write managers alone."""
    for host, port in (("h", None), (None, 1), ("h", 1)):
        with pytest.raises(ConfigurationError, match=r"not both: write managers=\["):
            resolve_managers(["a:1"], host, port)


def test_worker_and_client_take_managers() -> None:
    """The constructors: managers=[...], the 0.x pair, and both at once refused."""
    worker = EasyJobsWorker(manager_secret=SECRET, managers=["10.0.0.1:8220", "10.0.0.2:8220"])
    assert [str(a) for a in worker.managers] == ["10.0.0.1:8220", "10.0.0.2:8220"]
    seed = EasyJobsWorker(None, server_secret="x", manager_host="0.0.0.0", manager_port=8220,
                          manager_secret=SECRET, jobs_queue="ETL", max_tasks_per_worker=5)
    assert seed.managers == (ManagerAddress("0.0.0.0", 8220),)
    client = EasyJobsClient(managers=["[::1]:1", "b:2"], secret=SECRET)
    assert [str(a) for a in client.managers] == ["[::1]:1", "b:2"]
    with pytest.raises(ConfigurationError, match="host/port, not both"):
        EasyJobsClient("h", 1, SECRET, managers=["a:1"])
    with pytest.raises(ConfigurationError, match="manager_host/manager_port, not both"):
        EasyJobsWorker(manager_port=1, manager_secret=SECRET, managers=["a:1"])


def test_describe() -> None:
    one, two = ManagerAddress("a", 1), ManagerAddress("::1", 2)
    assert describe([one]) == "a:1"
    assert describe([one, two]) == "any of a:1, [::1]:2"
