"""Direct tests of the forwarding rules in proxy.http.headers: what reaches an upstream."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.http import headers
from proxy.http.head import FORWARDED_BLOCK_MAX, FieldBlock, parse_head
from proxy.http.headers import (
    CLIENT_CONDITIONS,
    CLIENT_FORWARDING,
    OVERRIDE_HEADERS,
    ForwardingRules,
    request_fields,
)
from tests.conftest import forward_request_headers

PLAIN = ForwardingRules.build(None, None)  # requests whose response is never stored
CACHED = ForwardingRules.build(None, ())  # fetches by the cache, key without headers

CLAIMS = CIMultiDict(
    [
        ("Host", "shop.example"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Forwarded-For", "198.51.100.1"),
        ("Forwarded", "for=203.0.113.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "front.example"),
        ("X-Real-IP", "203.0.113.7"),
        ("X-Original-URL", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("Accept", "application/json"),
    ]
)


def forward(
    rules: ForwardingRules,
    *,
    trusted: bool,
    peer: str | None = "192.0.2.10",
    client_host: str | None = "shop.example",
    headers: CIMultiDict[str] = CLAIMS,
) -> CIMultiDict[str]:
    return forward_request_headers(
        headers,
        rules,
        peer=peer,
        peer_trusted=trusted,
        proto="http",
        client_host=client_host,
        upstream_host="api:9000",
    )


def test_untrusted_peer_claims_nothing() -> None:
    for rules in (PLAIN, CACHED):
        out = forward(rules, trusted=False)
        assert out.getall("X-Forwarded-For") == ["192.0.2.10"]
        assert out["X-Forwarded-Proto"] == "http"
        for name in ("Forwarded", "X-Real-IP"):
            assert name not in out
        assert out["Host"] == "api:9000"
        assert out["Accept"] == "application/json"


def test_trusted_peer_chain_is_extended() -> None:
    out = forward(PLAIN, trusted=True)
    assert out.getall("X-Forwarded-For") == ["203.0.113.7, 198.51.100.1, 192.0.2.10"]
    assert out["Forwarded"] == "for=203.0.113.7, for=192.0.2.10"
    assert out["X-Forwarded-Proto"] == "https"
    assert out["X-Real-IP"] == "203.0.113.7"
    out = forward(PLAIN, trusted=True, peer="2001:db8::5")
    assert out["Forwarded"] == 'for=203.0.113.7, for="[2001:db8::5]"'


@pytest.mark.parametrize(
    ("rules", "trusted", "client_host", "expected"),
    [
        (PLAIN, False, "shop.example", "shop.example"),  # uncached: the client's own Host
        (PLAIN, True, "shop.example", "front.example"),  # a trusted proxy knows better
        (PLAIN, False, None, None),  # absolute-form: no Host to speak of
        (CACHED, False, "shop.example", None),  # stored for everyone: nothing unkeyed
        (CACHED, True, "shop.example", None),
        (ForwardingRules.build(None, ("HOST",)), False, "shop.example", "shop.example"),
        (ForwardingRules.build(None, ("Host",)), True, "shop.example", "shop.example"),
        (ForwardingRules.build(None, ("X-Forwarded-Host",)), True, "s", "front.example"),
        (ForwardingRules.build(None, ("X-Forwarded-Host",)), False, "s", None),
        (ForwardingRules.build("api.example.com", None), True, "s", "api.example.com"),
        (ForwardingRules.build("api.example.com", ()), False, None, "api.example.com"),
    ],
)
def test_forwarded_host(
    rules: ForwardingRules, trusted: bool, client_host: str | None, expected: str | None
) -> None:
    out = forward(rules, trusted=trusted, client_host=client_host)
    assert out.getall("X-Forwarded-Host", [None]) == [expected]


def test_overrides_only_on_cache_fetches_and_only_unkeyed() -> None:
    assert forward(PLAIN, trusted=False)["X-Original-URL"] == "/admin"
    for trusted in (False, True):
        out = forward(CACHED, trusted=trusted)
        assert "X-Original-URL" not in out
        assert "X-HTTP-Method-Override" not in out
    keyed = ForwardingRules.build(None, ("X-HTTP-Method-Override",))
    out = forward(keyed, trusted=False)
    assert out["X-HTTP-Method-Override"] == "DELETE"
    assert "X-Original-URL" not in out


def test_keying_by_a_client_forwarding_header_does_not_make_it_believed() -> None:
    keyed = ForwardingRules.build(None, ("X-Forwarded-Prefix", "X-Real-IP"))
    headers = CIMultiDict([("X-Forwarded-Prefix", "/p"), ("X-Real-IP", "1.2.3.4")])
    out = forward(keyed, trusted=False, headers=headers)
    assert "X-Forwarded-Prefix" not in out
    assert "X-Real-IP" not in out
    assert forward(keyed, trusted=True, headers=headers)["X-Forwarded-Prefix"] == "/p"


def test_connection_cannot_remove_what_the_proxy_adds() -> None:
    headers = CIMultiDict([("Connection", "X-Forwarded-For, Via"), ("X-Forwarded-For", "6.6.6.6")])
    out = forward(PLAIN, trusted=True, headers=headers)
    assert out.getall("X-Forwarded-For") == ["192.0.2.10"]
    assert out["Via"] == "1.1 cacheproxy"


def test_the_header_sets_are_lower_case() -> None:
    for name in CLIENT_FORWARDING | OVERRIDE_HEADERS:
        assert name == name.lower()


def test_request_fields_are_the_head_lines_in_one_pass() -> None:
    headers = CIMultiDict(
        [
            ("Host", "shop.example"),
            ("Accept", "*/*"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("Via", "1.0 edge"),
            ("Cookie", "a=1"),
        ]
    )
    lines = request_fields(
        headers,
        PLAIN,
        peer="192.0.2.10",
        peer_trusted=False,
        proto="https",
        client_host="shop.example",
        upstream_host="api:9000",
    )
    assert lines == [
        "Host: api:9000",  # first, as RFC 9110 §7.2 asks of a user agent
        "Accept: */*",
        "Cookie: a=1",
        "X-Forwarded-For: 192.0.2.10",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: shop.example",
        "Via: 1.0 edge, 1.1 cacheproxy",
    ]


def test_field_names_seen_again_and_past_the_names_remembered_are_handled_alike() -> None:
    """What to do with each client field name is remembered, up to a bound: a name seen
    again, in another spelling, or after the bound is reached is sent, dropped or merged as
    the first time, whatever Connection lists."""
    own = "x-remembered-id"  # an own field of this test's: a memo no other test has filled
    many = [(f"X-Name-{i}", str(i)) for i in range(600)]  # more than a memo holds
    odd = [("X-Keep", "1"), ("X-Forwarded-For", "6.6.6.6"), ("X_Remembered_Id", "7")]
    odd += [("Via", "1.0 a"), ("X-Secret", "s"), ("VIA", "1.0 b"), ("accept", "*/*")]

    def sent(fields: list[tuple[str, str]], trusted: bool, connection: str = "") -> list[str]:
        hop = [("Connection", connection)] if connection else []
        lines = request_fields(
            CIMultiDict([*hop, *fields]),
            PLAIN,
            peer="192.0.2.10",
            peer_trusted=trusted,
            proto="http",
            client_host=None,
            upstream_host="api",
            own_field=own,
        )
        return [line for line in lines if not line.startswith("X-Name-")]

    expected = [
        "Host: api",
        "X-Keep: 1",
        "X-Secret: s",
        "accept: */*",
        "X-Forwarded-For: 6.6.6.6, 192.0.2.10",
        "X-Forwarded-Proto: http",
        "Via: 1.0 a, 1.0 b, 1.1 cacheproxy",
    ]
    untrusted = [line for line in expected if line != "X-Forwarded-For: 6.6.6.6, 192.0.2.10"]
    untrusted.insert(4, "X-Forwarded-For: 192.0.2.10")
    for fields in (odd, odd, [*many, *odd]):
        assert sent(fields, True) == expected
        assert sent(fields, False) == untrusted
        assert sent(fields, True, "x-secret") == [x for x in expected if x != "X-Secret: s"]


def test_what_clients_send_cannot_grow_the_memos_of_field_names() -> None:
    """A memo is kept per set of rules of the config's, never per set a client makes with
    Connection; names longer than NAME_KEPT_MAX are handled, and not kept."""
    own = "x-bounded-id"  # a memo no other test has filled
    long_name = "X-" + "l" * 200

    def sent(connection: str) -> list[str]:
        fields = CIMultiDict([("Connection", connection)] if connection else [])
        fields.add(long_name, "v")
        return request_fields(
            fields,
            PLAIN,
            peer="192.0.2.10",
            peer_trusted=False,
            proto="http",
            client_host=None,
            upstream_host="api",
            own_field=own,
        )

    memos = headers._request_kinds.cache_info().currsize
    assert f"{long_name}: v" in sent("")
    memo = headers._request_kinds(PLAIN.drop_untrusted, PLAIN.underscores_kept, own)
    assert long_name not in memo and len(memo) == 0
    for i in range(100):  # each its own set of rules, were Connection's tokens kept
        assert f"{long_name}: v" not in sent(f"{long_name}, x-{i}")
    assert headers._request_kinds.cache_info().currsize == memos + 1


def test_a_validating_fetch_drops_the_clients_conditions_and_ranges() -> None:
    headers = CIMultiDict(
        [
            ("If-None-Match", '"a"'),
            ("if-modified-since", "x"),
            ("Range", "bytes=0-1"),
            ("If-Match", "*"),
            ("If-Unmodified-Since", "x"),
            ("If-Range", '"a"'),
            ("A", "1"),
        ]
    )

    def names(validating: bool, trusted: bool) -> set[str]:
        lines = request_fields(
            headers,
            CACHED,
            peer="192.0.2.10",
            peer_trusted=trusted,
            proto="http",
            client_host=None,
            upstream_host="api",
            validating=validating,
        )
        return {line.partition(":")[0].lower() for line in lines}

    for trusted in (False, True):
        assert names(False, trusted) >= {n.lower() for n in headers}
        assert not names(True, trusted) & CLIENT_CONDITIONS
        assert "a" in names(True, trusted)


# --- the fields of a block the listener read: made once per block and inputs (FieldBlock) ---

BLOCK_HEAD = (
    b"GET /x HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 203.0.113.7\r\n"
    b"Forwarded: for=203.0.113.7\r\nX-Request-ID: theirs\r\nAccept: */*\r\n\r\n"
)


def _block(head: bytes = BLOCK_HEAD) -> FieldBlock:
    parsed = parse_head(head)
    assert parsed is not None and type(parsed.headers) is FieldBlock
    return parsed.headers


def _both(block: FieldBlock, rules: ForwardingRules, **inputs: Any) -> list[str]:
    """request_fields of `block`, checked against the same fields in a plain proxy (never
    memoised)."""
    args: dict[str, Any] = {
        "peer": "192.0.2.10",
        "peer_trusted": False,
        "proto": "http",
        "client_host": "shop.example",
        "upstream_host": "api:9000",
        **inputs,
    }
    lines = request_fields(block, rules, **args)
    assert lines == request_fields(CIMultiDictProxy(CIMultiDict(block)), rules, **args)
    return lines


def test_a_block_read_again_never_carries_another_peers_address() -> None:
    block = _block()
    first = _both(block, PLAIN, peer="192.0.2.10")
    second = _both(block, PLAIN, peer="198.51.100.9")
    assert "X-Forwarded-For: 198.51.100.9" in second
    assert not any("192.0.2.10" in line for line in second)
    assert "X-Forwarded-For: 192.0.2.10" in first
    assert block.forwarded is not None and len(block.forwarded) == 1  # one entry, both peers
    assert _both(block, PLAIN, peer=None) == [
        line for line in first if not line.startswith("X-Forwarded-For")
    ]


def test_a_block_read_again_keeps_a_chain_for_trusted_peers_only() -> None:
    block = _block()
    for _ in range(2):  # in either order, and again from the memo
        trusted = _both(block, PLAIN, peer="10.0.0.1", peer_trusted=True)
        untrusted = _both(block, PLAIN, peer="10.0.0.2", peer_trusted=False)
        assert "X-Forwarded-For: 203.0.113.7, 10.0.0.1" in trusted
        assert "Forwarded: for=203.0.113.7, for=10.0.0.1" in trusted
        assert "X-Forwarded-For: 10.0.0.2" in untrusted
        assert not any("203.0.113.7" in line for line in untrusted)


def test_a_block_read_again_follows_new_rules_and_hosts() -> None:
    block = _block()
    before = _both(block, PLAIN)
    assert "X-Forwarded-Host: shop.example" in before
    reloaded = ForwardingRules.build("api.example.com", None)  # a reload's new public_host
    assert "X-Forwarded-Host: api.example.com" in _both(block, reloaded)
    assert _both(block, ForwardingRules.build(None, None)) == before  # equal rules, rebuilt
    assert not any(h.startswith("X-Forwarded-Host") for h in _both(block, CACHED))
    absolute = _both(block, PLAIN, client_host=None, upstream_host="other:81")
    assert absolute[0] == "Host: other:81"
    assert not any(h.startswith("X-Forwarded-Host") for h in absolute)


def test_a_block_read_again_hands_out_lines_of_its_own_with_the_id_field() -> None:
    block = _block()
    for id_ in ("one", "two"):
        lines = _both(block, PLAIN, own_field="x-request-id")
        assert not any("theirs" in line for line in lines)
        lines.append(f"X-Request-ID: {id_}")  # as UpstreamFetch.request_head does
    again = _both(block, PLAIN, own_field="x-request-id")
    assert not any(line.startswith("X-Request-ID") for line in again)
    assert "X-Request-ID: theirs" in _both(block, PLAIN)  # ids off: the client's passes


def test_the_memo_of_a_block_is_capped_and_big_blocks_have_none() -> None:
    block = _block()
    for i in range(3 * headers.FORWARDED_KEPT):
        _both(block, PLAIN, upstream_host=f"api{i}:9000")
        assert block.forwarded is not None and 0 < len(block.forwarded) <= headers.FORWARDED_KEPT
    pad = b"X-Pad: " + b"p" * FORWARDED_BLOCK_MAX + b"\r\n"
    big = _block(BLOCK_HEAD[:-2] + pad + b"\r\n")
    assert big.forwarded is None
    assert "X-Forwarded-For: 192.0.2.10" in _both(big, PLAIN)
