"""No cache poisoning through forwarded headers, end to end through the real proxy.

Nothing a client controls may reach the upstream of a caching route unless it is part of
the cache key; client-supplied forwarding headers are believed only from trusted proxies.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from proxy.config.loader import ConfigError, parse_config
from tests.conftest import Origin, StartProxy, get, raw_exchange, url_of

CACHE = {"ttl": 60}


def link_builder(request: web.Request) -> web.Response:
    """An origin that builds absolute links the way many frameworks do."""
    host = request.headers.get("X-Forwarded-Host", request.host)
    return web.Response(
        text=f"page for {host}",
        headers={"Link": f"<http://{host}/next>; rel=next", "Cache-Control": "max-age=60"},
    )


def seen_by_origin(origin: Origin) -> dict[str, str]:
    return {k.lower(): v for k, v in origin.requests[-1].headers.items()}


# ---------------------------------------------------------------------------
# Host / X-Forwarded-Host poisoning
# ---------------------------------------------------------------------------


async def test_a_clients_host_is_not_stored_for_everyone(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = link_builder
    proxy = await start_proxy(origin.url, cache=CACHE)

    resp, _ = await get(http, proxy, "/items", headers={"Host": "evil.example"})
    assert "evil.example" not in resp.headers["Link"]  # not keyed by Host: not forwarded
    assert "x-forwarded-host" not in seen_by_origin(origin)

    resp, body = await get(http, proxy, "/items")
    assert resp.headers["X-Cache"] == "HIT"
    assert "evil.example" not in resp.headers["Link"]
    assert b"evil.example" not in body


async def test_keyed_by_host_each_host_gets_its_own_links(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = link_builder
    proxy = await start_proxy(origin.url, cache={**CACHE, "key": {"headers": ["host"]}})
    good = {"Host": "api.example.com"}

    # A client's own X-Forwarded-Host is not believed (no trusted proxies) ...
    resp, _ = await get(http, proxy, "/items", headers={**good, "X-Forwarded-Host": "evil.example"})
    assert resp.headers["X-Cache"] == "MISS"
    assert resp.headers["Link"] == "<http://api.example.com/next>; rel=next"
    resp, _ = await get(http, proxy, "/items", headers=good)
    assert resp.headers["X-Cache"] == "HIT"
    assert resp.headers["Link"] == "<http://api.example.com/next>; rel=next"

    # ... and another Host is another key: its links are its own, never anyone else's.
    resp, _ = await get(http, proxy, "/items", headers={"Host": "evil.example"})
    assert resp.headers["X-Cache"] == "MISS"
    assert resp.headers["Link"] == "<http://evil.example/next>; rel=next"
    resp, _ = await get(http, proxy, "/items", headers=good)
    assert resp.headers["X-Cache"] == "HIT"
    assert "evil.example" not in resp.headers["Link"]
    assert origin.hits["/items"] == 2


async def test_public_host_is_the_forwarded_host_on_every_route(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = link_builder
    proxy = await start_proxy(
        origin.url,
        listen={"public_host": "api.example.com"},
        routes=[{"match": {"prefix": "/cached/"}, "cache": CACHE}],
    )
    evil = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    for path in ("/cached/x", "/plain"):
        resp, _ = await get(http, proxy, path, headers=evil)
        assert resp.headers["Link"] == "<http://api.example.com/next>; rel=next", path


async def test_uncached_requests_forward_the_clients_host(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    """Nothing from them is stored, so the client's Host may shape only its own response."""
    proxy = await start_proxy(origin.url, routes=[{"match": {"prefix": "/c/"}, "cache": CACHE}])
    await get(http, proxy, "/plain", headers={"Host": "shop.example"})
    assert seen_by_origin(origin)["x-forwarded-host"] == "shop.example"
    async with http.post(url_of(proxy, "/c/x"), headers={"Host": "shop.example"}) as resp:
        assert resp.status == 200
    assert seen_by_origin(origin)["x-forwarded-host"] == "shop.example"
    # Absolute-form (the proxy as HTTP_PROXY): its Host header is ignored (RFC 9112 §3.2.2).
    raw = await raw_exchange(
        proxy.proxy_port,
        f"GET {origin.url}/plain HTTP/1.1\r\nHost: evil.example\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert raw.startswith(b"HTTP/1.1 200")
    assert "x-forwarded-host" not in seen_by_origin(origin)


# ---------------------------------------------------------------------------
# X-Forwarded-For / Forwarded: believed only from trusted proxies
# ---------------------------------------------------------------------------

CLIENT_CLAIMS = {
    "X-Forwarded-For": "203.0.113.7",
    "Forwarded": 'for="[2001:db8::7]:4711";proto=https',
    "X-Real-IP": "203.0.113.8",
    "True-Client-IP": "203.0.113.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Host": "claimed.example",
    "X-Forwarded-Prefix": "/claimed",
    "Host": "shop.example",
}


@pytest.mark.parametrize("trusted", [None, ["10.0.0.0/8", "::1"]])
async def test_an_untrusted_peers_forwarding_claims_are_dropped(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    trusted: list[str] | None,
) -> None:
    sections = {} if trusted is None else {"trusted_proxies": trusted}  # None: the default
    proxy = await start_proxy(origin.url, **sections)
    await get(http, proxy, "/who", headers=CLIENT_CLAIMS)
    seen = seen_by_origin(origin)
    assert seen["x-forwarded-for"] == "127.0.0.1"  # the socket peer, nothing else
    assert seen["x-forwarded-proto"] == "http"  # what we know, not what it says
    assert seen["x-forwarded-host"] == "shop.example"  # uncached route: its Host
    for claim in ("forwarded", "x-real-ip", "true-client-ip", "x-forwarded-port"):
        assert claim not in seen, claim
    assert "x-forwarded-prefix" not in seen


async def test_a_trusted_peers_forwarding_headers_are_kept_and_extended(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, trusted_proxies=["127.0.0.1/32"])
    await get(http, proxy, "/who", headers=CLIENT_CLAIMS)
    seen = seen_by_origin(origin)
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert seen["forwarded"] == 'for="[2001:db8::7]:4711";proto=https, for=127.0.0.1'
    assert seen["x-real-ip"] == "203.0.113.8"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == "claimed.example"  # uncached route: believed


async def test_a_trusted_peers_forwarded_host_reaches_a_cached_origin_only_when_keyed(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = link_builder
    keyed = {**CACHE, "key": {"headers": ["X-Forwarded-Host"]}}
    proxy = await start_proxy(
        origin.url,
        trusted_proxies=["127.0.0.0/8"],
        routes=[
            {"match": {"prefix": "/keyed/"}, "cache": keyed},
            {"match": {"prefix": "/unkeyed/"}, "cache": CACHE},
        ],
    )
    front = {
        "X-Forwarded-Host": "front.example",
        "X-Forwarded-For": "203.0.113.7",
        "X-Original-URL": "/admin",
    }
    resp, _ = await get(http, proxy, "/keyed/x", headers=front)
    assert resp.headers["Link"] == "<http://front.example/next>; rel=next"
    resp, _ = await get(http, proxy, "/unkeyed/x", headers=front)
    assert "front.example" not in resp.headers["Link"]
    seen = seen_by_origin(origin)
    assert seen["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert "x-original-url" not in seen  # even a trusted proxy's overrides are unkeyed input


# ---------------------------------------------------------------------------
# Override headers and ignored query parameters on fetches through the cache
# ---------------------------------------------------------------------------

OVERRIDES = {
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-HTTP-Method-Override": "DELETE",
    "X-HTTP-Method": "DELETE",
    "X-Method-Override": "DELETE",
    "X-Original-Method": "DELETE",
    "X-Host": "evil.example",
    "X-Forwarded-Server": "evil.example",
    "X-Forwarded-Prefix": "/evil",
}


async def test_override_headers_do_not_reach_a_cached_origin_unless_keyed(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        origin.url,
        routes=[
            {
                "match": {"prefix": "/keyed/"},
                "cache": {**CACHE, "key": {"headers": ["x-http-method-override", "X-Host"]}},
            },
            {"match": {"prefix": "/cached/"}, "cache": CACHE},
        ],
    )
    await get(http, proxy, "/cached/x", headers=OVERRIDES)
    seen = seen_by_origin(origin)
    for name in OVERRIDES:
        assert name.lower() not in seen, name

    await get(http, proxy, "/keyed/x", headers=OVERRIDES)
    seen = seen_by_origin(origin)
    assert seen["x-http-method-override"] == "DELETE"
    assert seen["x-host"] == "evil.example"
    assert "x-original-url" not in seen
    assert "x-forwarded-prefix" not in seen

    # A POST is never stored: its overrides are the client's business.
    async with http.post(url_of(proxy, "/cached/x"), headers=OVERRIDES) as resp:
        assert resp.status == 200
    seen = seen_by_origin(origin)
    assert seen["x-http-method-override"] == "DELETE"
    assert seen["x-original-url"] == "/admin"


async def test_ignored_query_parameters_do_not_reach_the_origin_on_cached_gets(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(
        origin.url, cache={**CACHE, "key": {"query": {"ignore": ["utm_*", "_"]}}}
    )

    async def raw_get(target: str) -> bytes:
        return await raw_exchange(
            proxy.proxy_port,
            f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
        )

    raw = await raw_get("/s?b=%20x+y&utm_source=%3Cscript%3E&a=1&_=17&utm%5Fmedium=z&c")
    assert raw.startswith(b"HTTP/1.1 200")
    assert origin.requests[-1].raw_path == "/s?b=%20x+y&a=1&c"  # as sent, in order
    assert b"script" not in raw
    raw = await raw_get("/s?utm_source=1&b=%20x+y&a=1&c")
    assert b"X-Cache: HIT" in raw
    raw = await raw_get("/t?utm_source=1&_=2")
    assert origin.requests[-1].raw_path == "/t"
    assert len(origin.requests) == 2


# ---------------------------------------------------------------------------
# listen.hosts: 421 for Hosts this proxy does not serve
# ---------------------------------------------------------------------------


async def test_listen_hosts_responds_421_for_other_hosts(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        origin.url,
        cache=CACHE,
        listen={"hosts": ["api.example.com", "*.example.net", "127.0.0.1"]},
    )
    for host in ("api.example.com", "API.Example.COM:8443", "a.b.example.net", "127.0.0.1:1"):
        resp, _ = await get(http, proxy, "/ok", headers={"Host": host})
        assert resp.status == 200, host
    served = len(origin.requests)
    for host in ("evil.example", "example.net", "api.example.com.evil.example", "api.example"):
        resp, body = await get(http, proxy, "/ok", headers={"Host": host})
        assert resp.status == 421, host
        assert resp.headers["Content-Type"] == "application/json"
        assert (await resp.json())["error"] == "misdirected_request"
        assert host.encode() not in body

    port = proxy.proxy_port
    raw = await raw_exchange(port, b"GET /ok HTTP/1.0\r\n\r\n")  # names no host at all
    assert raw.startswith(b"HTTP/1.0 421")
    assert b'"misdirected_request"' in raw
    raw = await raw_exchange(port, b"GET /ok HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 421")
    # HTTP/1.1 without Host is malformed (RFC 9112 §3.2): the parser refuses it with 400 first.
    raw = await raw_exchange(port, b"GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert raw.split(b" ", 2)[1] == b"400"
    # Absolute-form names an upstream, checked against the upstreams instead.
    raw = await raw_exchange(
        port, f"GET {origin.url}/ok HTTP/1.1\r\nHost: evil\r\nConnection: close\r\n\r\n".encode()
    )
    assert raw.startswith(b"HTTP/1.1 200")
    assert len(origin.requests) == served


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    return info.value.problems


def test_forwarding_keys_are_validated_with_their_key_paths() -> None:
    found = problems(
        """
upstream: {url: http://api:9000}
trusted_proxies: [10.0.0.0/8, 10.0.0.1/8, not-an-ip, '2001:db8::/32', '::1/129']
listen:
  public_host: 'https://api.example.com'
  hosts: [api.example.com, 'api.example.com:8080', '*', '*.[::1]', 'a b']
"""
    )
    assert found == [  # in the order of the file
        "trusted_proxies[1]: '10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?",
        "trusted_proxies[2]: not an IP address or CIDR network: 'not-an-ip'",
        "trusted_proxies[4]: not an IP address or CIDR network: '::1/129'",
        "listen.public_host: not a host or host:port: 'https://api.example.com'",
        "listen.hosts[1]: not a host name or `*.domain` wildcard: 'api.example.com:8080'"
        " (leave the port out: any port matches)",
        "listen.hosts[2]: not a host name or `*.domain` wildcard: '*'",
        "listen.hosts[3]: not a host name or `*.domain` wildcard: '*.[::1]'",
        "listen.hosts[4]: not a host name or `*.domain` wildcard: 'a b'",
    ]
    assert problems("upstream: {url: http://api:9000}\nlisten: {hosts: []}") == [
        "listen.hosts: must list at least one host name (omit it to serve any Host)"
    ]


def test_forwarding_keys_defaults_and_normal_forms() -> None:
    config = parse_config("upstream: {url: http://api:9000}", env={})
    assert config.trusted_proxies == ()
    assert config.listen.public_host is None
    assert config.listen.hosts is None
    config = parse_config(
        """
upstream: {url: http://api:9000}
trusted_proxies: [10.0.0.0/8, 192.0.2.1, '::1', '::ffff:10.1.0.0/112']
listen: {public_host: 'api.example.com:8443', hosts: [API.Example.com., '*.Example.net', '::1']}
""",
        env={},
    )
    assert config.trusted_proxies == ("10.0.0.0/8", "192.0.2.1/32", "::1/128", "10.1.0.0/16")
    assert config.listen.public_host == "api.example.com:8443"
    assert config.listen.hosts == ("api.example.com", "*.example.net", "[::1]")
