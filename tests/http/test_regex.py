"""Configured regexes run on RE2: linear time whatever the pattern, and what RE2 cannot do
(lookarounds, backreferences) is a config error with its key path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.config.cors import CorsSettings
from proxy.config.loader import ConfigError, parse_config
from proxy.edge.cors import CorsRules
from proxy.pipeline.routes import RouteTable
from tests.conftest import ProxyProcess, StartUpstream, raw_exchange

# Backtracking `re` takes about 2^n steps on n a's followed by a non-match.
CATASTROPHIC = "/api/(a+)+$"
CRAFTED = "/api/" + "a" * 5000 + "!"
# A hang detector, not a performance bound: RE2 decides in well under a millisecond.
PROMPTLY = aiohttp.ClientTimeout(total=2)


async def _named_upstream(start_upstream: StartUpstream, name: str) -> str:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=name)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return (await start_upstream(app)).url


async def test_catastrophic_route_regex_responds_promptly_and_health_meanwhile(
    start_upstream: StartUpstream, proxy_process: Callable[..., ProxyProcess]
) -> None:
    main = await _named_upstream(start_upstream, "main")
    api = await _named_upstream(start_upstream, "api")
    proxy = proxy_process(main, routes=[{"match": {"regex": CATASTROPHIC}, "upstream": api}])
    base = f"http://127.0.0.1:{proxy.port}"

    async def fetch(url: str) -> tuple[int, str]:
        async with aiohttp.ClientSession(timeout=PROMPTLY) as http, http.get(url) as resp:
            return resp.status, await resp.text()

    async def health_meanwhile() -> tuple[int, str]:
        await asyncio.sleep(0.1)  # the crafted request is in the proxy by now
        return await fetch(f"http://127.0.0.1:{proxy.admin_port}/health")

    crafted, health = await asyncio.gather(fetch(base + CRAFTED), health_meanwhile())
    assert crafted == (200, "main")  # no match: the default route
    assert health[0] == 200
    # The route still does its job, anchored at the start like Kong's.
    assert await fetch(base + "/api/" + "a" * 5000) == (200, "api")
    assert await fetch(base + "/x/api/aaa") == (200, "main")


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    return info.value.problems


def test_lookarounds_and_backreferences_are_config_errors_with_key_paths() -> None:
    found = _problems(
        r"""
upstream: {url: 'http://u:1'}
cors:
  allow_origin_regex: ['https://(?!evil)[a-z]+\.example\.com']
routes:
  - match: {regex: '/api/(?=v1)'}
  - match: {regex: '/(a)\1'}
  - match: {regex: '/api/(?<!x)y'}
    cors: {allow_origin_regex: ['https://ok\.example\.com', 'https://(x)\1']}
"""
    )
    assert len(found) == 5, found
    expected = {
        "routes[0].match.regex: invalid regular expression '/api/(?=v1)': invalid perl operator",
        r"routes[1].match.regex: invalid regular expression '/(a)\\1': invalid escape sequence",
        "routes[2].match.regex: invalid regular expression '/api/(?<!x)y': invalid perl",
        "cors.allow_origin_regex[0]: invalid regular expression 'https://(?!evil)",
        "routes[2].cors.allow_origin_regex[1]: invalid regular expression 'https://(x)\\\\1'",
    }
    for start in expected:
        assert any(p.startswith(start) for p in found), (start, found)
    assert all("no lookarounds or backreferences" in p for p in found)


def test_a_pattern_too_big_for_re2_is_a_config_error_not_a_fallback() -> None:
    [problem] = _problems("upstream: {url: 'http://u:1'}\nroutes:\n  - match: {regex: 'a{1001}'}\n")
    assert problem.startswith("routes[0].match.regex: invalid regular expression 'a{1001}'")


def _table(**route: Any) -> RouteTable:
    config = parse_config("upstream: {url: 'http://u:1'}\nroutes: []\n", env={})
    config = config.model_validate({**config.model_dump(), "routes": [route]})
    return RouteTable(config)


def test_route_regex_matches_at_the_start_only() -> None:
    table = _table(name="items", match={"regex": "/api/v[0-9]+/items"})
    assert table.match("GET", "/api/v2/items").name == "items"
    assert table.match("GET", "/api/v2/items/7?x").name == "items"  # a prefix, like re.match
    assert table.match("GET", "/v1/api/v2/items").name == "default"
    pinned = _table(name="one", match={"regex": "/api/[0-9]+$"})
    assert pinned.match("GET", "/api/42").name == "one"
    assert pinned.match("GET", "/api/42/x").name == "default"


def test_cors_regex_matches_the_whole_origin_ignoring_case() -> None:
    cors = CorsRules(CorsSettings(allow_origin_regex=[r"https://[a-z]+\.example\.com"]))
    assert cors.allowed_origin("https://Review.Example.com")
    assert not cors.allowed_origin("https://review.example.com.evil.net")
    assert not cors.allowed_origin("xhttps://review.example.com")


async def test_an_origin_that_is_not_utf8_is_refused_cleanly(
    start_upstream: StartUpstream, proxy_process: Callable[..., ProxyProcess]
) -> None:
    """aiohttp hands obs-text header bytes over as surrogates; RE2 gets the client's bytes."""
    main = await _named_upstream(start_upstream, "main")
    proxy = proxy_process(main, cors={"allow_origin_regex": [r"https://.+\.example\.com"]})
    reply = await raw_exchange(
        proxy.port,
        b"GET / HTTP/1.1\r\nHost: x\r\nOrigin: https://\xff.example.com\r\n"
        b"Connection: close\r\n\r\n",
    )
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), reply[:300]
    assert b"access-control-allow-origin" not in head.lower()  # not a valid UTF-8 origin
    assert body.endswith(b"main")
