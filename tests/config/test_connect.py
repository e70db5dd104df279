"""`upstream.dns` as loaded: defaults, and every mistake refused at load with its key path."""

from __future__ import annotations

import pytest

from proxy.config.connect import nameserver
from proxy.config.loader import ConfigError, parse_config


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    return info.value.problems


def upstream(**keys: object) -> str:
    inner = ", ".join(f"{k}: {v}" for k, v in keys.items())
    return f"upstream: {{url: https://api.test, {inner}}}"


def test_defaults_keep_answers_within_bounds() -> None:
    dns = parse_config("upstream: {url: https://api.test}", env={}).upstream.dns
    assert (dns.min_ttl, dns.max_ttl, dns.negative_ttl, dns.nameservers) == (5, 60, 5, ())


@pytest.mark.parametrize(
    ("written", "taken"),
    [
        ("10.0.0.2", "10.0.0.2:53"),
        ("10.0.0.2:5353", "10.0.0.2:5353"),
        ("::1", "[::1]:53"),
        ("[fd00::2]:5353", "[fd00::2]:5353"),
    ],
)
def test_name_servers_are_ip_addresses_with_an_optional_port(written: str, taken: str) -> None:
    assert nameserver(written) == taken


def test_dns_mistakes_are_refused_with_their_key_paths() -> None:
    assert problems(upstream(dns="{nameservers: [dns.example]}")) == [
        "upstream.dns.nameservers: not a name server address: 'dns.example' (an IP address, "
        "optionally with a port: 10.0.0.2, 10.0.0.2:5353, [fd00::2]:53)"
    ]
    assert problems(upstream(dns="{nameservers: ['10.0.0.2:99999']}")) == [
        "upstream.dns.nameservers: not a port: 99999 in '10.0.0.2:99999'"
    ]
    assert problems(upstream(dns="{min_ttl: 2m}")) == [
        "upstream.dns: min_ttl (120) is above max_ttl (60)"
    ]
    found = problems(upstream(dns="{max_ttl: 0, negative_ttl: -1}"))
    assert [p.split(":")[0] for p in found] == ["upstream.dns.max_ttl", "upstream.dns.negative_ttl"]


def test_name_servers_need_the_dns_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on an install without aiodns: getaddrinfo cannot be pointed at a name server.
    monkeypatch.setattr("proxy.config.connect.has_dns_extra", lambda: False)
    assert problems(upstream(dns="{nameservers: [10.0.0.2]}")) == [
        "upstream.dns.nameservers: needs the dns extra (aiodns), not installed: "
        "pip install 'cacheproxy[dns]'"
    ]
    assert parse_config("upstream: {url: http://a}", env={}).upstream.dns.nameservers == ()
