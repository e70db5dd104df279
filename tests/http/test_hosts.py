"""Direct tests of proxy.http.hosts: the listen.hosts allowlist against requests' Host."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.http.hosts import HostAllowlist, host_without_port

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
