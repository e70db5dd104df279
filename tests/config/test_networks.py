"""Direct tests of proxy.config.networks: `trusted_proxies` entries."""

from __future__ import annotations

import pytest

from proxy.config.networks import parse_network


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("127.0.0.1", "127.0.0.1/32"),
        (" 127.0.0.1/32 ", "127.0.0.1/32"),
        ("::1", "::1/128"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),  # mapped networks match unmapped peers
        ("::ffff:192.0.2.7", "192.0.2.7/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_parse_network(text: str, expected: str) -> None:
    assert str(parse_network(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"),
        ("2001:db8::1/32", "did you mean 2001:db8::/32?"),
        ("nope", "not an IP address or CIDR network: 'nope'"),
        ("10.0.0.0/33", "not an IP address or CIDR network"),
        ("", "not an IP address or CIDR network"),
        ("10.0.0.0/8,10.1.0.0/16", "not an IP address or CIDR network"),
        ("[::1]", "not an IP address or CIDR network"),
    ],
)
def test_parse_network_rejects_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("[", r"\[")):
        parse_network(text)
