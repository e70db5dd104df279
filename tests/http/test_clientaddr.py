"""Direct tests of proxy.http.clientaddr: who the client is behind (trusted) proxies."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from proxy.http.clientaddr import (
    TrustedProxies,
    client_address,
    forwarded_chain,
    forwarded_for_chain,
    forwarded_node,
    parse_address,
)

TRUSTED = TrustedProxies(["10.0.0.0/8", "2001:db8:ffff::/48", "::1"])
NOBODY = TrustedProxies()
PEER = "10.0.0.1"  # a trusted proxy in front of us


# ---------------------------------------------------------------------------
# parsing single values
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("192.0.2.1:4711", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),  # dual-stack sockets report v4 peers so
        ("[::ffff:192.0.2.1]:80", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("", None),
        ("unknown", None),
        ("_hidden", None),
        ("_SEVKISEK", None),
        ("192.0.2.1:", None),
        ("192.0.2.1:http", None),
        ("192.0.2.1:123456", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]4711", None),
        ("[2001:db8::1]:", None),
        ("[2001:db8::1]:_obf", None),
        ("2001:db8::1:4711:1:2:3:4", None),
        ("999.0.0.1", None),
        ("192.0.2.1/24", None),
        ("example.com", None),
        ('"192.0.2.1"', None),  # XFF never quotes; Forwarded unquotes before parsing
        ("192.0.2.1 192.0.2.2", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == expected


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("::ffff:10.1.2.3", True),
        ("::1", True),
        ("127.0.0.1", False),
        ("2001:db8:ffff:1::5", True),
        ("2001:db8:fffe::5", False),
        ("garbage", False),
        ("", False),
        (None, False),
    ],
)
def test_trusts(peer: str | None, trusted: bool) -> None:
    assert TRUSTED.trusts(peer) is trusted
    assert NOBODY.trusts(peer) is False


def test_empty_list_is_false_and_trusts_nobody() -> None:
    assert not NOBODY
    assert TRUSTED
    assert not TrustedProxies([]).trusts("10.0.0.1")


# ---------------------------------------------------------------------------
# header chains
# ---------------------------------------------------------------------------


def test_forwarded_for_chain_spans_lines_in_order() -> None:
    chain = forwarded_for_chain(["192.0.2.1, 192.0.2.2", "garbage,192.0.2.3:80", ""])
    assert [str(a) if a else None for a in chain] == [
        "192.0.2.1",
        "192.0.2.2",
        None,
        "192.0.2.3",
        None,
    ]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['for="[2001:db8::1]:4711"'], ["2001:db8::1"]),
        (["for=192.0.2.60;proto=http;by=203.0.113.43"], ["192.0.2.60"]),
        (["For=192.0.2.60"], ["192.0.2.60"]),  # parameter names are case-insensitive
        (['proto=https; for="192.0.2.1:8080"'], ["192.0.2.1"]),
        (["for=192.0.2.43, for=198.51.100.17"], ["192.0.2.43", "198.51.100.17"]),
        (["for=192.0.2.43", "for=198.51.100.17"], ["192.0.2.43", "198.51.100.17"]),
        (["for=unknown"], [None]),
        (['for="_gazonk"'], [None]),
        (["for=_hidden, for=192.0.2.1"], [None, "192.0.2.1"]),
        (["proto=https"], [None]),  # a hop that did not say who it talked to
        (["for=192.0.2.1;for=192.0.2.2"], [None]),  # which one? neither
        (['for="192.0.2.1'], [None]),  # unterminated quote
        (['for="[2001:db8::\\1]"'], ["2001:db8::1"]),  # quoted-pair
        (["for=2001:db8::1"], ["2001:db8::1"]),  # unquoted v6: invalid, yet unambiguous
        (["for="], [None]),
        ([""], [None]),
        ([";;;,,"], [None, None, None]),
        # A client's open quote cannot swallow what a trusted proxy appends after it.
        (['for="192.0.2.9, for=198.51.100.1'], [None, "198.51.100.1"]),
    ],
)
def test_forwarded_chain(lines: list[str], expected: list[str | None]) -> None:
    assert [str(a) if a else None for a in forwarded_chain(lines)] == expected


def test_forwarded_node_quotes_and_brackets_ipv6_only() -> None:
    assert forwarded_node("192.0.2.1") == "192.0.2.1"
    assert forwarded_node("2001:db8::1") == '"[2001:db8::1]"'
    # What we write, we read back.
    assert str(forwarded_chain([f"for={forwarded_node('2001:db8::1')}"])[0]) == "2001:db8::1"


# ---------------------------------------------------------------------------
# client_address
# ---------------------------------------------------------------------------

CASES = [
    # id, peer, X-Forwarded-For lines, Forwarded lines, expected
    ("untrusted-peer-ignores-xff", "192.0.2.50", ["198.51.100.1"], [], "192.0.2.50"),
    ("untrusted-peer-ignores-fwd", "192.0.2.50", [], ["for=198.51.100.1"], "192.0.2.50"),
    ("untrusted-peer-normalised", "::ffff:192.0.2.50", ["1.2.3.4"], [], "192.0.2.50"),
    ("no-socket-address", None, ["198.51.100.1"], [], None),
    ("trusted-no-headers", PEER, [], [], PEER),
    ("trusted-xff", PEER, ["198.51.100.1"], [], "198.51.100.1"),
    ("spoofed-left-part-ignored", PEER, ["6.6.6.6, 198.51.100.1"], [], "198.51.100.1"),
    ("trusted-hops-skipped", PEER, ["6.6.6.6, 198.51.100.1, 10.0.0.7, 10.0.0.8"], [],
     "198.51.100.1"),
    ("all-trusted-farthest-wins", PEER, ["10.0.0.9, 10.0.0.8"], [], "10.0.0.9"),
    ("garbage-stops-at-its-writer", PEER, ["198.51.100.1, garbage, 10.0.0.7"], [],
     "10.0.0.7"),
    ("garbage-last-is-the-peer", PEER, ["198.51.100.1, garbage"], [], PEER),
    ("empty-entry-is-garbage", PEER, ["198.51.100.1, , 10.0.0.7"], [], "10.0.0.7"),
    ("spoofed-trusted-then-garbage", PEER, ["10.0.0.66, _x, 198.51.100.1"], [],
     "198.51.100.1"),
    ("xff-port", PEER, ["198.51.100.1:4711"], [], "198.51.100.1"),
    ("xff-v6-brackets-port", PEER, ["[2001:db8::1]:4711"], [], "2001:db8::1"),
    ("xff-lines", PEER, ["6.6.6.6", "198.51.100.1"], [], "198.51.100.1"),
    ("fwd-v6-brackets-port", PEER, [], ['for="[2001:db8::1]:4711"'], "2001:db8::1"),
    ("fwd-lines", PEER, [], ["for=6.6.6.6", "for=198.51.100.1;proto=https"], "198.51.100.1"),
    ("fwd-obfuscated", PEER, [], ["for=198.51.100.1, for=_hidden"], PEER),
    ("fwd-obfuscated-behind-trusted", PEER, [], ["for=_hidden, for=10.0.0.7"], "10.0.0.7"),
    ("fwd-unknown", PEER, [], ["for=unknown"], PEER),
    ("fwd-open-quote", PEER, [], ['for="6.6.6.6, for=198.51.100.1'], "198.51.100.1"),
    ("v6-trusted-peer", "::1", ["198.51.100.1"], [], "198.51.100.1"),
    ("v6-trusted-hops", "2001:db8:ffff::1", ["2001:db8::5, 2001:db8:ffff::2"], [],
     "2001:db8::5"),
    ("mapped-trusted-peer", "::ffff:10.0.0.1", ["198.51.100.1"], [], "198.51.100.1"),
    ("mapped-client", PEER, ["::ffff:198.51.100.1"], [], "198.51.100.1"),
    ("both-agree", PEER, ["198.51.100.1"], ["for=198.51.100.1"], "198.51.100.1"),
    # One of them is a client's own header passed through: it must not choose.
    ("both-disagree-peer", PEER, ["198.51.100.1"], ["for=6.6.6.6"], PEER),
    ("xff-empty-line", PEER, [""], [], PEER),
]  # fmt: skip


@pytest.mark.parametrize(
    ("peer", "xff", "fwd", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_client_address(
    peer: str | None, xff: list[str], fwd: list[str], expected: str | None
) -> None:
    assert client_address(peer, xff, fwd, TRUSTED) == expected


# --- properties --------------------------------------------------------------

addresses = st.ip_addresses()
trusted_hops = st.one_of(
    st.ip_addresses(network="10.0.0.0/8"), st.ip_addresses(network="2001:db8:ffff::/48")
)
junk = st.lists(st.text(), max_size=4)


def _untrusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    parsed = parse_address(str(address))
    assume(parsed is not None and not TRUSTED.trusts_address(parsed))
    return str(parsed)


@given(addresses, junk, junk)
def test_an_untrusted_peer_is_the_client_whatever_it_sends(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, xff: list[str], fwd: list[str]
) -> None:
    expected = _untrusted(peer)
    assert client_address(str(peer), xff, fwd, TRUSTED) == expected
    assert client_address(str(peer), xff, fwd, NOBODY) == str(parse_address(str(peer)))


@given(st.text(), addresses, st.lists(trusted_hops, max_size=3), trusted_hops, st.booleans())
def test_a_client_cannot_spoof_its_way_out_through_x_forwarded_for(
    spoof: str,
    client: ipaddress.IPv4Address | ipaddress.IPv6Address,
    hops: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address,
    own_line: bool,
) -> None:
    """Whatever the client wrote, the trusted proxies appended the truth after it."""
    expected = _untrusted(client)
    appended = ", ".join([str(client), *map(str, hops)])
    lines = [spoof, appended] if own_line else [f"{spoof}, {appended}"]
    assert client_address(str(peer), lines, [], TRUSTED) == expected


@given(st.text(), addresses, st.lists(trusted_hops, max_size=3), trusted_hops)
def test_a_client_cannot_spoof_its_way_out_through_forwarded(
    spoof: str,
    client: ipaddress.IPv4Address | ipaddress.IPv6Address,
    hops: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    expected = _untrusted(client)
    appended = ", ".join(f"for={forwarded_node(str(a))};proto=https" for a in [client, *hops])
    assert client_address(str(peer), [], [f"{spoof}, {appended}"], TRUSTED) == expected


@given(trusted_hops, junk, junk)
def test_garbage_from_a_trusted_peer_never_raises_and_names_an_address(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, xff: list[str], fwd: list[str]
) -> None:
    result = client_address(str(peer), xff, fwd, TRUSTED)
    assert result is not None
    assert parse_address(result) is not None
