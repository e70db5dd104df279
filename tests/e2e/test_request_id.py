"""Request ids (`request_id:`): the client's when sane, otherwise made here; on every
response, in the access log, in the proxy's JSON errors, and upstream as the rules allow."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from tests.conftest import (
    Origin,
    ProxyProcess,
    StartProxy,
    free_port,
    get,
    raw_exchange,
    url_of,
)

MADE = re.compile(r"[0-9a-f]{44}")  # 16 random bytes and a 12-digit counter, in hex
ROUTES = [
    {"name": "live", "match": {"prefix": "/live/"}, "cache": False},
    {"name": "api", "match": {"prefix": "/api/"}},
]


def echoing(request: web.Request) -> web.Response:
    """An origin that echoes the request id it got, and lets the response be stored."""
    headers = {"Cache-Control": "max-age=60"}
    if "X-Request-ID" in request.headers:
        headers["X-Request-ID"] = request.headers["X-Request-ID"]
    return web.Response(text="ok", headers=headers)


async def test_an_accepted_id_goes_upstream_back_and_into_the_log(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    origin.respond = echoing
    proxy = proxy_process(origin.url, cache={"ttl": 30}, routes=ROUTES, log={"format": "json"})
    base = f"http://127.0.0.1:{proxy.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/live/a", headers={"X-Request-ID": "trace-1"}) as resp:
            assert resp.headers.getall("X-Request-ID") == ["trace-1"]
        assert origin.requests[-1].headers.getall("X-Request-ID") == ["trace-1"]
        async with http.get(f"{base}/api/a", headers={"X-Request-ID": "trace-2"}) as resp:
            assert resp.headers.getall("X-Request-ID") == ["trace-2"]
        sent_upstream = origin.requests[-1].headers.getall("X-Request-ID")
    assert len(sent_upstream) == 1 and MADE.fullmatch(sent_upstream[0])
    proxy.proc.send_signal(signal.SIGTERM)
    out, _ = proxy.proc.communicate(timeout=15)
    lines = [orjson.loads(x) for x in out.splitlines() if x.startswith("{")]
    access = [x for x in lines if "logger" not in x]
    assert [(x["path"], x["request_id"], x.get("upstream_request_id")) for x in access] == [
        ("/live/a", "trace-1", None),  # the same id went upstream
        ("/api/a", "trace-2", sent_upstream[0]),
    ]


async def test_text_log_lines_carry_the_ids(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, routes=ROUTES, log={"format": "text"})
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{proxy.port}/live/t"
        async with http.get(url, headers={"X-Request-ID": "text-1"}) as resp:
            assert resp.status == 200
    proxy.proc.send_signal(signal.SIGTERM)
    out, _ = proxy.proc.communicate(timeout=15)
    [line] = [x for x in out.splitlines() if '"/live/t"' in x]
    assert line.endswith(" request_id=text-1")


async def test_bad_ids_are_replaced_never_echoed(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, routes=ROUTES)
    for bad in ["x" * 129, "two words", ""]:
        resp, _ = await get(http, proxy, "/live/b", headers={"X-Request-ID": bad})
        [given] = resp.headers.getall("X-Request-ID")
        assert MADE.fullmatch(given), bad
        assert origin.requests[-1].headers.getall("X-Request-ID") == [given]
    resp, _ = await get(http, proxy, "/live/b", headers={"X-Request-ID": "x" * 128})
    assert resp.headers["X-Request-ID"] == "x" * 128  # the longest accepted
    two = CIMultiDict([("X-Request-ID", "one"), ("X-Request-ID", "two")])
    resp, _ = await get(http, proxy, "/live/b", headers=two)
    [given] = resp.headers.getall("X-Request-ID")
    assert MADE.fullmatch(given)
    assert origin.requests[-1].headers.getall("X-Request-ID") == [given]
    # A tab (legal in a field value) and non-ASCII bytes, sent as they are.
    for raw in [b"a\tb", "café".encode()]:  # (aiohttp's parser refuses other controls)
        head = b"GET /live/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-ID: "
        reply = await raw_exchange(proxy.proxy_port, head + raw + b"\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200"), reply
        ids = re.findall(rb"(?i)\r\nx-request-id: ([^\r]*)\r\n", reply)
        assert len(ids) == 1 and MADE.fullmatch(ids[0].decode()), reply
        assert origin.requests[-1].headers.getall("X-Request-ID") == [ids[0].decode()]


async def test_made_ids_are_unique_here_and_across_processes(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    proxy_process: Callable[..., ProxyProcess],
) -> None:
    proxy = await start_proxy(origin.url, cache={"ttl": 30}, routes=ROUTES)
    ids = []
    for n in range(300):
        resp, _ = await get(http, proxy, f"/api/{n % 3}")  # hits, misses, one id each
        ids.append(resp.headers["X-Request-ID"])
    assert len(set(ids)) == 300 and all(MADE.fullmatch(i) for i in ids)
    prefixes = {i[:32] for i in ids}
    assert len(prefixes) == 1
    others = [proxy_process(origin.url), proxy_process(origin.url)]
    for other in others:
        url = f"http://127.0.0.1:{other.port}/p"
        async with http.get(url) as resp:
            prefixes.add(resp.headers["X-Request-ID"][:32])
    assert len(prefixes) == 3


async def test_a_stored_echo_never_shows_another_clients_id(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = echoing
    proxy = await start_proxy(origin.url, cache={"ttl": 30}, routes=ROUTES)
    resp, _ = await get(http, proxy, "/api/s", headers={"X-Request-ID": "alice"})
    assert resp.headers.getall("X-Request-ID") == ["alice"]
    [upstream_id] = origin.requests[-1].headers.getall("X-Request-ID")
    assert upstream_id != "alice" and MADE.fullmatch(upstream_id)
    for headers in [{"X-Request-ID": "bob"}, {}, {"Accept-Encoding": "identity"}]:
        resp, _ = await get(http, proxy, "/api/s", headers=headers)
        assert resp.headers["X-Cache"] == "HIT"
        [given] = resp.headers.getall("X-Request-ID")
        assert given not in ("alice", upstream_id)
        assert given == headers.get("X-Request-ID", given)
    # Revalidated and conditional hits are sent by the general path: the same rule.
    resp, _ = await get(
        http, proxy, "/api/s", headers={"X-Request-ID": "carol", "Range": "bytes=0-0"}
    )
    assert resp.status == 206 and resp.headers.getall("X-Request-ID") == ["carol"]
    assert len(origin.requests) == 1


async def test_an_upstream_echo_on_an_uncached_route_is_replaced(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = lambda r: web.Response(text="x", headers={"X-Request-ID": "origin-own"})
    proxy = await start_proxy(origin.url, routes=ROUTES)
    resp, _ = await get(http, proxy, "/live/e", headers={"X-Request-ID": "dave"})
    assert resp.headers.getall("X-Request-ID") == ["dave"]
    origin.respond = lambda r: web.Response(
        body=b"x" * 300_000, headers={"X-Request-ID": "origin-own"}
    )  # past the one-write size: relayed as it streams
    resp, body = await get(http, proxy, "/live/big", headers={"X-Request-ID": "erin"})
    assert len(body) == 300_000 and resp.headers.getall("X-Request-ID") == ["erin"]


async def test_the_proxys_errors_carry_the_id(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        origin.url, cache={"ttl": 30}, routes=ROUTES, rate_limit={"limits": ["1/minute"]}
    )
    only_cached = {"X-Request-ID": "e-504", "Cache-Control": "only-if-cached"}
    resp, body = await get(http, proxy, "/api/none", headers=only_cached)
    assert resp.status == 504 and resp.headers["X-Request-ID"] == "e-504"
    assert orjson.loads(body)["request_id"] == "e-504"
    resp, body = await get(http, proxy, "/live/x", headers={"X-Request-ID": "e-429"})
    assert resp.status == 429 and resp.headers["X-Request-ID"] == "e-429"
    assert orjson.loads(body) == {
        **orjson.loads(body),
        "error": "rate_limited",
        "request_id": "e-429",
    }
    request = (
        b"GET ftp://h/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-ID: e-400\r\n\r\n"
    )
    reply = await raw_exchange(proxy.proxy_port, request)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"\r\nX-Request-ID: e-400" in head
    assert orjson.loads(body)["request_id"] == "e-400"
    down = await start_proxy(f"http://127.0.0.1:{free_port()}", routes=ROUTES)
    resp, body = await get(http, down, "/live/x")
    assert resp.status == 502
    assert orjson.loads(body)["request_id"] == resp.headers["X-Request-ID"]
    assert MADE.fullmatch(resp.headers["X-Request-ID"])


async def test_preflights_and_refusals_before_routing_carry_it(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        origin.url,
        routes=ROUTES,
        listen={"hosts": ["good.example"]},
        cors={"allow_origins": ["https://app.example"]},
    )
    async with http.get(url_of(proxy, "/live/x"), headers={"Host": "bad.example"}) as resp:
        assert resp.status == 421
        assert orjson.loads(await resp.read())["request_id"] == resp.headers["X-Request-ID"]
    preflight = {
        "Host": "good.example",
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "GET",
        "X-Request-ID": "pre-1",
    }
    async with http.options(url_of(proxy, "/live/x"), headers=preflight) as resp:
        assert resp.status == 204 and resp.headers["X-Request-ID"] == "pre-1"
    assert not origin.requests


async def test_a_custom_header_and_turned_off(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.respond = echoing
    custom = await start_proxy(origin.url, routes=ROUTES, request_id={"header": "X-Trace"})
    resp, _ = await get(http, custom, "/live/c", headers={"X-Trace": "t-1"})
    assert resp.headers["X-Trace"] == "t-1" and origin.requests[-1].headers["X-Trace"] == "t-1"

    off = await start_proxy(origin.url, cache={"ttl": 30}, routes=ROUTES, request_id=False)
    resp, _ = await get(http, off, "/live/c")
    assert "X-Request-ID" not in resp.headers
    assert "X-Request-ID" not in origin.requests[-1].headers
    # Off, the client's field goes upstream and the origin's comes back as before.
    resp, _ = await get(http, off, "/api/c", headers={"X-Request-ID": "as-is"})
    assert origin.requests[-1].headers["X-Request-ID"] == "as-is"
    assert resp.headers["X-Request-ID"] == "as-is"
    resp, body = await get(http, off, "/api/none", headers={"Cache-Control": "only-if-cached"})
    assert resp.status == 504 and "request_id" not in orjson.loads(body)
    assert "X-Request-ID" not in resp.headers
