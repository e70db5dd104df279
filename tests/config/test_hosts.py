"""Direct tests of proxy.config.hosts: `listen.hosts` patterns and `listen.public_host`."""

from __future__ import annotations

import pytest

from proxy.config.hosts import parse_host_pattern, parse_public_host


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("API.example.com", "api.example.com"),
        ("api.example.com.", "api.example.com"),
        ("*.Example.net", "*.example.net"),
        ("localhost", "localhost"),
        ("my_host.internal", "my_host.internal"),
        ("10.0.0.1", "10.0.0.1"),
        ("::1", "[::1]"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
    ],
)
def test_host_patterns_are_normalised(value: str, expected: str) -> None:
    assert parse_host_pattern(value) == expected


@pytest.mark.parametrize(
    "value", ["", "*", "*.", "*.*.example.com", "a.*.example.com", "example.com:80", "a b",
              "https://example.com", "-bad.example", "*.[::1]", "[::1]:80", "exa$mple.com",
              "[example.com]"],
)  # fmt: skip
def test_bad_host_patterns_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a host name"):
        parse_host_pattern(value)


@pytest.mark.parametrize(
    "value", ["api.example.com", "api.example.com:8443", "[::1]:8080", "127.0.0.1"]
)
def test_public_host_accepts_host_and_port(value: str) -> None:
    assert parse_public_host(value) == value


@pytest.mark.parametrize(
    "value", ["", "https://api.example.com", "api.example.com:http", "a b", "api:1:2", "*.x.com"]
)
def test_public_host_refuses_anything_else(value: str) -> None:
    with pytest.raises(ValueError, match="not a host or host:port"):
        parse_public_host(value)
