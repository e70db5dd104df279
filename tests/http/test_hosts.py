"""Direct tests of proxy.http.hosts: the listen.hosts allowlist against requests' Host."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config.hosts import parse_host_pattern
from proxy.http.hosts import HostAllowlist, HostTable, authority_host, host_without_port

ALLOW = HostAllowlist(["api.example.com", "*.example.net", "127.0.0.1", "[::1]"])


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("api.example.com", True),
        ("API.Example.COM", True),
        ("api.example.com:8080", True),
        ("api.example.com.", True),  # the absolute form of the same name
        ("api.example.com.:443", True),
        ("www.example.net", True),
        ("a.b.example.net:1", True),
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("[0:0::1]", True),
        ("example.net", False),  # a wildcard never matches the bare domain
        (".example.net", False),
        ("x/.example.net", False),
        ("a..example.net", False),
        ("evil.example", False),
        ("api.example.com.evil.example", False),
        ("evilapi.example.com", False),
        ("api.example.com:8080:1", False),
        ("api.example.co", False),
        ("::1", False),  # not a Host value: IPv6 must be bracketed
        ("[::2]", False),
        ("[::1", False),
        ("[127.0.0.1]", False),
        ("[api.example.com]", False),
        ("", False),
        (None, False),  # HTTP/1.0 without Host
    ],
)
def test_allowlist(host: str | None, allowed: bool) -> None:
    assert ALLOW.allows(host) is allowed


@given(st.text(max_size=40))
def test_allowlist_never_raises(host: str) -> None:
    assert isinstance(ALLOW.allows(host), bool)
    assert isinstance(host_without_port(host), str)


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("Example.COM:80", "example.com"),
        ("example.com", "example.com"),
        ("example.com.", "example.com"),
        ("[2001:DB8::1]:443", "[2001:db8::1]"),
        ("[garbage]:1", "[garbage]:1"),
        ("[api.example.com]", "[api.example.com]"),
    ],
)
def test_host_without_port(host: str, name: str) -> None:
    assert host_without_port(host) == name


def test_remembered_hosts_are_bounded_and_change_no_verdict() -> None:
    allow = HostAllowlist(["*.example.net"])
    hosts = [f"h{i}.example.net:{i % 3 + 80}" for i in range(3000)]
    assert all(allow.allows(h) for h in hosts)
    assert all(allow.allows(h) for h in hosts)  # remembered or not, the same verdict
    assert not allow.allows("example.net")
    assert len(allow._seen) <= 1024


# --- HostTable: routes' match.hosts (virtual hosts) ---------------------------------------


def _table(*items: tuple[list[str] | None, str]) -> HostTable[str]:
    return HostTable(
        [(None if h is None else [parse_host_pattern(p) for p in h], i) for h, i in items]
    )


VHOSTS = _table(
    (None, "any-1"),
    (["*.example.com"], "wild"),
    (["api.example.com"], "api"),
    (["*.eu.example.com", "shop.example.org"], "eu-or-shop"),
    (["API.example.com", "*.example.com"], "api-again"),  # both of its patterns match: once
    (None, "any-2"),
)


@pytest.mark.parametrize(
    ("host", "order"),
    [
        # Exact names first, then wildcards (the longer domain first), then routes naming
        # none; the table's order within each.
        ("api.example.com", ["api", "api-again", "wild", "any-1", "any-2"]),
        ("x.example.com", ["wild", "api-again", "any-1", "any-2"]),
        ("a.eu.example.com", ["eu-or-shop", "wild", "api-again", "any-1", "any-2"]),
        ("shop.example.org", ["eu-or-shop", "any-1", "any-2"]),
        # Case, the port and a trailing dot do not matter.
        ("API.Example.COM:8443", ["api", "api-again", "wild", "any-1", "any-2"]),
        ("api.example.com.", ["api", "api-again", "wild", "any-1", "any-2"]),
        ("X.Example.Com.:80", ["wild", "api-again", "any-1", "any-2"]),
        # A wildcard never matches the bare domain, nor what is not a name.
        ("example.com", ["any-1", "any-2"]),
        (".example.com", ["any-1", "any-2"]),
        ("x/.example.com", ["any-1", "any-2"]),
        ("evilapi.example.com.evil", ["any-1", "any-2"]),
        ("", ["any-1", "any-2"]),
        (None, ["any-1", "any-2"]),  # no Host: only routes naming none
    ],
)
def test_host_table_order(host: str | None, order: list[str]) -> None:
    assert list(VHOSTS.lookup(host)) == order
    assert list(VHOSTS.lookup(host)) == order  # remembered: the same answer


def test_host_table_ipv6_and_addresses() -> None:
    table = _table((["[::1]", "127.0.0.1"], "local"), (None, "any"))
    assert table.lookup("[::1]:8080") == ("local", "any")
    assert table.lookup("[0:0::1]") == ("local", "any")
    assert table.lookup("127.0.0.1:8080") == ("local", "any")
    assert table.lookup("127.0.0.2") == ("any",)


def test_host_table_without_catch_all_gives_nothing_for_other_hosts() -> None:
    table = _table((["api.example.com"], "api"))
    assert table.lookup("other.example.com") == ()
    assert table.lookup(None) == ()


def test_host_table_remembers_a_bounded_number_of_hosts() -> None:
    table = _table((["*.example.net"], "wild"), (None, "any"))
    hosts = [f"h{i}.example.net:{i % 3 + 80}" for i in range(3000)]
    assert all(table.lookup(h) == ("wild", "any") for h in hosts)
    assert all(table.lookup(h) == ("wild", "any") for h in hosts)
    assert table.lookup("example.net") == ("any",)
    assert len(table._seen) <= 1024


@given(st.text(max_size=40))
def test_host_table_never_raises(host: str) -> None:
    assert set(VHOSTS.lookup(host)) <= {"any-1", "any-2", "wild", "api", "eu-or-shop", "api-again"}


def test_authority_host_is_a_host_value() -> None:
    assert authority_host(("api.example.com", 80)) == "api.example.com"
    assert authority_host(("::1", 8080)) == "[::1]"
