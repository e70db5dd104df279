"""Hits sent as prepared bytes (proxy/respond/prepared.py) say what aiohttp's Response said.

A miss is served by the general path (an aiohttp Response built from the entry); every
hit on a form already served goes out as prepared bytes. So the two responses of one URL,
read off the wire, must agree on everything but the per-request lines.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from proxy.config.cors import CorsSettings
from proxy.config.rates import parse_rate
from proxy.edge.cors import CorsRules
from proxy.edge.ratelimit.headers import RateHeaders
from proxy.respond.prepared import relayed
from proxy.respond.relay import PHRASES
from tests.conftest import Origin, StartProxy

APP = "https://app.example.com"
BODY = b'{"data":"' + b"x" * 3000 + b'"}'

# Request lines whose values may differ between two responses of one URL.
VOLATILE = {"age", "x-cache", "cache-status", "x-ratelimit-remaining", "x-ratelimit-reset"}
VOLATILE.add("ratelimit")
VOLATILE.add("x-request-id")  # one per request


def doc(_: web.Request) -> web.Response:
    """An upstream response carrying what the proxy must replace or drop on the way out."""
    return web.Response(
        body=BODY,
        content_type="application/json",
        headers={
            "Cache-Control": "public, max-age=3600",
            "ETag": '"v1"',
            "Access-Control-Allow-Origin": "https://evil.example",
            "X-RateLimit-Remaining": "5",
            "Vary": "Accept-Language",
        },
    )


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: str
) -> tuple[str, list[tuple[str, str]], bytes]:
    """One request on a connection: (status line, header lines in order, body)."""
    writer.write(request.encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode().split("\r\n")
    fields = [(k.lower(), v) for k, _, v in (x.partition(": ") for x in lines if x)]
    length = int(dict(fields).get("content-length", "0"))
    body = b"" if request.startswith("HEAD") else await reader.readexactly(length)
    return status_line, fields, body


CONFIGS: dict[str, dict[str, Any]] = {
    "cache only": {},
    "cors allowlist": {"cors": {"allow_origins": [APP], "expose_headers": ["X-Cache"]}},
    "cors credentials": {
        "cors": {"allow_origins": [APP], "allow_credentials": True, "expose_headers": ["ETag"]}
    },
    "cors any origin": {"cors": {"allow_origins": ["*"], "expose_headers": ["X-Cache"]}},
    "compression": {"compression": {"algorithms": ["br", "gzip"]}},
    "rate limit": {"rate_limit": {"limits": ["100000/minute", "1000000/hour"]}},
    "everything": {
        "cors": {"allow_origins": [APP], "allow_credentials": True},
        "compression": {"algorithms": ["br", "gzip"]},
        "rate_limit": {"limits": ["100000/minute"]},
    },
}
REQUESTS = {
    "GET": "GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n",
    "HEAD": "HEAD {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n",
    "HTTP/1.0 keep-alive": "GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n{extra}\r\n",
}
CLIENTS = {
    "plain": "",
    "allowed origin, br": f"Origin: {APP}\r\nAccept-Encoding: br, gzip\r\n",
    "refused origin, gzip": "Origin: https://other.example\r\nAccept-Encoding: gzip\r\n",
}


@pytest.mark.parametrize("config", CONFIGS)
async def test_a_prepared_hit_says_what_the_miss_said(
    origin: Origin, start_proxy: StartProxy, config: str
) -> None:
    origin.respond = doc
    proxy = await start_proxy(origin.url, cache={"ttl": 60}, **CONFIGS[config])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        cases = itertools.product(REQUESTS.items(), CLIENTS.items())
        for i, ((kind, template), (client, extra)) in enumerate(cases):
            request = template.format(path=f"/doc/{i}", extra=extra)
            miss_status, miss, miss_body = await exchange(reader, writer, request)
            hit_status, hit, hit_body = await exchange(reader, writer, request)
            again = await exchange(reader, writer, request)  # from the head made just now
            where = f"{kind}, {client}"
            assert dict(miss)["x-cache"] == "MISS", where
            assert dict(hit)["x-cache"] == "HIT", where
            assert again[0] == hit_status and again[2] == hit_body, where
            assert [k for k, _ in again[1]] == [k for k, _ in hit], where
            assert hit_status == miss_status, where
            assert hit_body == miss_body, where
            assert sorted(f for f in hit if f[0] not in VOLATILE) == sorted(
                f for f in miss if f[0] not in VOLATILE
            ), where
            assert sorted(k for k, _ in hit if k in VOLATILE) == sorted(
                k for k, _ in miss if k in VOLATILE
            ), where
            assert len(hit) == len(miss), where
    finally:
        writer.close()


async def test_the_response_to_a_closing_request_closes(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = doc
    proxy = await start_proxy(origin.url, cache={"ttl": 60})
    for x_cache in ("MISS", "HIT"):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
        try:
            request = "GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            _, fields, body = await exchange(reader, writer, request)
            assert (dict(fields)["x-cache"], dict(fields)["connection"]) == (x_cache, "close")
            assert body == BODY
            assert await asyncio.wait_for(reader.read(), 5) == b""  # and the server closed
        finally:
            writer.close()
        # HTTP/1.0 without keep-alive: no Connection line, closed after the response.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
        try:
            status, fields, body = await exchange(reader, writer, "GET /c HTTP/1.0\r\n\r\n")
            assert status == "HTTP/1.0 200 OK" and "connection" not in dict(fields)
            assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            writer.close()


# --- what a prepared head was made from must not outlive it -----------------------------


async def test_a_304_refresh_replaces_the_prepared_head(
    origin: Origin, start_proxy: StartProxy
) -> None:
    version = itertools.count(1)

    def revalidated(request: web.Request) -> web.Response:
        # max-age 2: Date has whole seconds, so an entry can be up to 1 s old when stored.
        headers = {"Cache-Control": "max-age=2", "ETag": '"v1"', "X-Version": str(next(version))}
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers=headers)
        return web.Response(body=BODY, headers=headers)

    origin.respond = revalidated
    proxy = await start_proxy(origin.url, cache={})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    request = "GET /r HTTP/1.1\r\nHost: t\r\n\r\n"
    try:
        seen = [dict((await exchange(reader, writer, request))[1]) for _ in range(2)]
        assert [(s["x-cache"], s["x-version"]) for s in seen] == [("MISS", "1"), ("HIT", "1")]
        await asyncio.sleep(2.1)
        seen = [dict((await exchange(reader, writer, request))[1]) for _ in range(2)]
        assert [(s["x-cache"], s["x-version"]) for s in seen] == [
            ("REVALIDATED", "2"),
            ("HIT", "2"),  # the 304's headers, not the head prepared before it
        ]
    finally:
        writer.close()


async def test_a_purge_drops_the_prepared_head(origin: Origin, start_proxy: StartProxy) -> None:
    version = itertools.count(1)
    origin.respond = lambda _: web.Response(
        text=f"version {next(version)}", headers={"Cache-Control": "max-age=60"}
    )
    proxy = await start_proxy(origin.url, cache={})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    request = "GET /p HTTP/1.1\r\nHost: t\r\n\r\n"
    try:
        responses = [await exchange(reader, writer, request) for _ in range(2)]
        assert [a[2] for a in responses] == [b"version 1", b"version 1"]
        await proxy.pipeline.cache.purge("prefix", "/p")
        responses = [await exchange(reader, writer, request) for _ in range(2)]
        assert [(dict(a[1])["x-cache"], a[2]) for a in responses] == [
            ("MISS", b"version 2"),
            ("HIT", b"version 2"),
        ]
    finally:
        writer.close()


async def test_a_reload_rebuilds_heads_for_the_new_routes(
    origin: Origin, start_proxy: StartProxy
) -> None:
    from proxy.config.loader import parse_config
    from tests.conftest import config_text

    origin.respond = doc
    cors = {"allow_origins": [APP]}
    proxy = await start_proxy(origin.url, cache={"ttl": 60}, cors=cors)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    request = f"GET /d HTTP/1.1\r\nHost: t\r\nOrigin: {APP}\r\n\r\n"
    try:
        for _ in range(2):
            fields = dict((await exchange(reader, writer, request))[1])
        assert fields["access-control-allow-origin"] == APP and fields["x-cache"] == "HIT"
        assert "access-control-expose-headers" not in fields
        cors = {"allow_origins": ["*"], "expose_headers": ["ETag"]}
        new = parse_config(config_text(origin.url, cache={"ttl": 60}, cors=cors), env={})
        assert proxy.apply(new)["reloaded"] is True
        fields = dict((await exchange(reader, writer, request))[1])
        assert fields["x-cache"] == "HIT"
        assert fields["access-control-allow-origin"] == "*"
        assert fields["access-control-expose-headers"] == "ETag"
        assert "Origin" not in fields.get("vary", "")
    finally:
        writer.close()


async def test_two_routes_taking_turns_at_one_entry_do_not_inflate_its_counted_size(
    origin: Origin, start_proxy: StartProxy
) -> None:
    """Two virtual hosts routed to one upstream share its entries (the key is what is
    fetched). Each hit through the other route makes that route's forms, replacing the
    entry's, and counts their heads against max_memory: the heads replaced must be counted
    out, or clients of both hosts grow one entry's counted size by a head per request until
    the store evicts every other entry for it."""
    origin.respond = doc
    one = {"name": "one", "match": {"prefix": "/", "hosts": ["one.test"]}}
    two = {"name": "two", "match": {"prefix": "/", "hosts": ["two.test"]}}
    proxy = await start_proxy(origin.url, cache={"ttl": 60}, routes=[one, two])
    store = proxy.pipeline.cache.store
    requests = [f"GET /d HTTP/1.1\r\nHost: {host}\r\n\r\n" for host in ("one.test", "two.test")]
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    counted = []
    try:
        for request in requests * 10:
            await exchange(reader, writer, request)
            counted.append(store.bytes)
    finally:
        writer.close()
    assert len(set(counted[1:])) == 1, counted  # the one head of each route, counted once


# --- the per-request lines, against the multidict headers they replace ---------------------


def _lines(headers: CIMultiDict[str]) -> str:
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items())


@pytest.mark.parametrize(
    "config",
    [
        {"allow_origins": [APP, "https://*.example.org"]},
        {"allow_origins": [APP], "allow_credentials": True, "expose_headers": ["ETag", "X-A"]},
        {"allow_origins": ["*"], "expose_headers": ["ETag"]},
        {"allow_origin_regex": ["https://review-[0-9]+\\.example\\.dev"]},
    ],
)
@pytest.mark.parametrize(
    "origins",
    [
        (),
        (APP,),
        ("https://a.example.org",),
        ("https://review-12.example.dev",),
        ("https://evil.example",),
        (APP, APP),
        ("x" * 600,),
    ],
)
def test_cors_allow_lines_are_what_apply_adds_per_request(
    config: dict[str, Any], origins: tuple[str, ...]
) -> None:
    rules = CorsRules(CorsSettings(**config))
    request: CIMultiDict[str] = CIMultiDict(("Origin", o) for o in origins)
    constant: CIMultiDict[str] = CIMultiDict()
    rules.apply(CIMultiDict(), constant)
    for _ in range(2):  # computed, then remembered
        applied: CIMultiDict[str] = CIMultiDict()
        rules.apply(request, applied)
        extra = CIMultiDict((k, v) for k, v in applied.items() if (k, v) not in constant.items())
        assert rules.allow_lines(request) == _lines(extra)


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("remaining", [0, 1, 99, 16_383, 16_384, 999_999_999])
@pytest.mark.parametrize("reset", [1, 59, 3600, 86_400])
def test_rate_limit_lines_are_the_pairs_on_the_wire(which: int, remaining: int, reset: int) -> None:
    headers = RateHeaders([parse_rate("100/minute"), parse_rate("1000000000/day")])
    pairs = headers.get(which, remaining, reset)
    assert headers.lines(which, remaining, reset) == _lines(CIMultiDict(pairs))


# --- relayed responses: an upstream response read whole, written as prepared bytes --------

RELAYED: dict[str, tuple[int, str | None, list[tuple[str, str]], bytes]] = {
    "json": (200, None, [("Content-Type", "application/json"), ("ETag", '"a"')], BODY),
    "no type, no server": (200, None, [("X-A", "1")], b"abc"),
    "empty body": (200, None, [("X-A", "1")], b""),
    "own date and server": (
        200,
        None,
        [("Date", "Tue, 01 Jan 2030 00:00:00 GMT"), ("Server", "o")],
        b"x",
    ),
    "unknown status": (599, None, [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], b"e"),
    "own reason": (404, "Nowhere", [("Content-Type", "text/plain")], b"gone"),
}


# HEAD responses are not relayed this way (relay.relay sends their head through aiohttp).
RELAYED_REQUESTS = {k: v for k, v in REQUESTS.items() if k != "HEAD"}
RELAYED_REQUESTS["closing"] = "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("case", RELAYED)
@pytest.mark.parametrize("request_text", RELAYED_REQUESTS.values(), ids=list(RELAYED_REQUESTS))
async def test_a_relayed_response_is_what_aiohttps_response_sends(
    case: str, request_text: str
) -> None:
    status, reason, fields, body = RELAYED[case]

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        headers = CIMultiDict(fields)
        if request.path == "/aiohttp":
            return web.Response(status=status, reason=reason, headers=headers, body=body)
        phrase = reason or PHRASES.get(status, "")
        return relayed(status, phrase, headers, body, "bypass")

    server = await asyncio.get_running_loop().create_server(web.Server(handler), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        responses = []
        for path in ("/aiohttp", "/relayed"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                request = request_text.format(path=path, extra="")
                responses.append(await exchange(reader, writer, request))
            finally:
                writer.close()
        (status_a, fields_a, body_a), (status_r, fields_r, body_r) = responses
        assert status_r == status_a
        assert body_r == body_a

        # The same lines (repeated ones in the same order); Date's value is the clock's.
        def lines(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
            now = [(k, "now" if k == "date" and "2030" not in v else v) for k, v in fields]
            return sorted(now, key=lambda field: field[0])

        assert lines(fields_r) == lines(fields_a)
    finally:
        server.close()
        await server.wait_closed()


def test_a_sent_head_reads_back_with_the_bytes_it_was_sent_with() -> None:
    # A field the upstream sent in bytes that are not UTF-8 goes on as those bytes, and
    # reads back (for invalidation after an unsafe request, say) as it was parsed.
    fields = CIMultiDict({"Location": "/caf\udce9", "Content-Type": "text/plain"})
    response = relayed(201, "Created", fields, b"made", "bypass")
    assert b"Location: /caf\xe9\r\n" in response._static
    assert response.headers["Location"] == "/caf\udce9"
