"""Virtual hosts (routes[].match.hosts) through a running proxy: two APIs behind two host
names and a catch-all, each host's entries apart, purges (PURGE, the admin API, an unsafe
request's invalidation) reaching the right host's entries only."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy.config.loader import parse_config
from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, StartUpstream, config_text, url_of

A, B = "a.example.com", "x.b.example.com"


async def named_origin(start_upstream: StartUpstream, name: str) -> Origin:
    o = Origin()
    o.respond = lambda r: web.Response(
        text=f"{name} {r.path_qs}", headers={"Cache-Control": "max-age=60"}
    )
    o.upstream = await start_upstream(o.app())
    o.url = o.upstream.url
    return o


async def fetch(
    http: aiohttp.ClientSession, proxy: ProxyServer, host: str, path: str = "/x"
) -> tuple[str, str]:
    """(body, X-Cache) of a GET of `path` on `host`."""
    async with http.get(url_of(proxy, path), headers={"Host": host}) as resp:
        assert resp.status == 200
        return await resp.text(), resp.headers["X-Cache"]


async def admin_purge(proxy: ProxyServer, spec: dict[str, str]) -> Any:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"http://127.0.0.1:{proxy.admin_port}/cache/purge", json=spec) as resp,
    ):
        assert resp.status == 200
        return await resp.json()


async def three_apis(
    start_upstream: StartUpstream, start_proxy: StartProxy, **sections: Any
) -> tuple[ProxyServer, Origin, Origin, Origin]:
    a = await named_origin(start_upstream, "A")
    b = await named_origin(start_upstream, "B")
    rest = await named_origin(start_upstream, "REST")
    routes = [
        {"name": "a", "match": {"prefix": "/", "hosts": [A]}, "upstream": a.url},
        {"name": "b", "match": {"prefix": "/", "hosts": ["*.b.example.com"]}, "upstream": b.url},
        {"name": "rest", "match": {"prefix": "/"}},  # any other host: upstream.url
    ]
    proxy = await start_proxy(rest.url, cache={}, routes=routes, **sections)
    return proxy, a, b, rest


async def test_each_host_reaches_its_api_and_keeps_its_own_entries(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy, a, b, rest = await three_apis(start_upstream, start_proxy)
    assert await fetch(http, proxy, A) == ("A /x", "MISS")
    # Same path, another host: not A's entry, whatever the port, case or trailing dot.
    assert await fetch(http, proxy, "X.B.Example.COM.:8080") == ("B /x", "MISS")
    assert await fetch(http, proxy, "elsewhere.example.net") == ("REST /x", "MISS")
    assert await fetch(http, proxy, "b.example.com") == ("REST /x", "HIT")  # not under *.b
    for _ in range(2):
        assert await fetch(http, proxy, "A.example.com:8080") == ("A /x", "HIT")
        assert await fetch(http, proxy, "y.b.example.com") == ("B /x", "HIT")
        assert await fetch(http, proxy, "127.0.0.1") == ("REST /x", "HIT")
    assert (a.hits["/x"], b.hits["/x"], rest.hits["/x"]) == (1, 1, 1)
    # Each upstream got its own Host, not the client's.
    assert a.requests[0].headers["Host"] == a.url.removeprefix("http://")
    # The route, as today, labels metrics (and the access log).
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as resp,
    ):
        metrics = await resp.text()
    hits = {
        s.labels["route"]: s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "cacheproxy_cache_lookups_total" and s.labels["result"] == "hit"
    }
    assert hits == {"a": 2, "b": 2, "rest": 3, "default": 0}


async def test_purges_reach_the_named_hosts_entries_only(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy, a, b, rest = await three_apis(
        start_upstream, start_proxy, purge={"allow": ["127.0.0.1"]}
    )
    hosts = (A, B, "other.example.net")
    for host in hosts:
        await fetch(http, proxy, host)

    # PURGE on the proxy port: the Host it names.
    async with http.request("PURGE", url_of(proxy, "/x"), headers={"Host": A}) as resp:
        assert resp.status == 200 and await resp.json() == {"purged": 1}
    assert [(await fetch(http, proxy, h))[1] for h in hosts] == ["MISS", "HIT", "HIT"]

    # The admin API: a URL with its host (`/x` alone is the catch-all's).
    assert await admin_purge(proxy, {"url": f"http://{B}/x"}) == {"purged": 1}
    assert [(await fetch(http, proxy, h))[1] for h in hosts] == ["HIT", "MISS", "HIT"]
    assert await admin_purge(proxy, {"url": "/x"}) == {"purged": 1}
    assert [(await fetch(http, proxy, h))[1] for h in hosts] == ["HIT", "HIT", "MISS"]

    # A successful POST invalidates its URL on its own host (RFC 9111 §4.4).
    async with http.post(url_of(proxy, "/x"), headers={"Host": B}) as resp:
        assert resp.status == 200
    assert [(await fetch(http, proxy, h))[1] for h in hosts] == ["HIT", "MISS", "HIT"]
    assert (a.hits["/x"], b.hits["/x"], rest.hits["/x"]) == (2, 4, 2)  # b: 3 GETs, a POST


async def test_listen_hosts_refuses_what_no_vhost_serves(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    listen = {"hosts": [A, "*.b.example.com", "127.0.0.1"]}
    proxy, *_ = await three_apis(start_upstream, start_proxy, listen=listen)
    assert (await fetch(http, proxy, A))[0] == "A /x"
    assert (await fetch(http, proxy, B))[0] == "B /x"
    assert (await fetch(http, proxy, "127.0.0.1:1"))[0] == "REST /x"
    async with http.get(url_of(proxy, "/x"), headers={"Host": "c.example.com"}) as resp:
        assert resp.status == 421
        assert (await resp.json())["error"] == "misdirected_request"


async def test_one_upstream_under_two_base_paths_keeps_two_entries(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    """The key holds the upstream's base path: `/x` fetched as `/one/x` and as `/two/x` are
    two URLs of one origin, never one entry."""
    routes = [
        {"name": "one", "match": {"prefix": "/", "hosts": [A]}, "upstream": origin.url + "/one"},
        {"name": "two", "match": {"prefix": "/", "hosts": [B]}, "upstream": origin.url + "/Two"},
        {"name": "three", "match": {"prefix": "/"}, "upstream": origin.url + "/two"},
    ]
    proxy = await start_proxy(origin.url, cache={}, routes=routes)
    for _ in range(2):
        assert (await fetch(http, proxy, A))[0] == "body of /one/x"
        assert (await fetch(http, proxy, B))[0] == "body of /Two/x"  # paths are case-sensitive
        assert (await fetch(http, proxy, "c.example.com"))[0] == "body of /two/x"
    assert origin.hits == {"/one/x": 1, "/Two/x": 1, "/two/x": 1}


async def test_a_reload_that_adds_hosts_routes_by_host_at_once(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    a = await named_origin(start_upstream, "A")
    rest = await named_origin(start_upstream, "REST")
    proxy = await start_proxy(rest.url, cache={})
    assert (await fetch(http, proxy, A))[0] == "REST /x"  # no route names a host: Host unread
    route = {"name": "a", "match": {"prefix": "/", "hosts": [A]}, "upstream": a.url}
    new = parse_config(config_text(rest.url, cache={}, routes=[route]), env={})
    assert proxy.apply(new)["reloaded"] is True
    assert await fetch(http, proxy, A) == ("A /x", "MISS")
    assert await fetch(http, proxy, "other.example.com") == ("REST /x", "HIT")
