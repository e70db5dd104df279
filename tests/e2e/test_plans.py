"""The plans `Pipeline.handle` keeps (pipeline/handler.py `_planned`): what a request's method,
target and Host decide (its target, route and host) is kept from their second request on and
reused only for requests that decide it the same way. Every request here goes the ordinary
way (`ordinary`): the fast path reads the same plans (tests/e2e/test_fast_path.py)."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web

from proxy.config.loader import parse_config
from proxy.pipeline import handler
from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, config_text
from tests.e2e.test_fast_path import connection, ordinary, per_tenant
from tests.e2e.test_prepared import exchange

Response = tuple[str, dict[str, str], bytes]


def get(path: str, host: str = "t", extra: str = "", method: str = "GET") -> str:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n{extra}\r\n"


async def sent(proxy: ProxyServer, *requests: str) -> list[Response]:
    """The ordinary path's responses to `requests`, on one connection."""
    responses = []
    with ordinary(proxy):
        async with connection(proxy) as (reader, writer):
            for request in requests:
                status, fields, body = await exchange(reader, writer, request)
                responses.append((status, dict(fields), body))
    return responses


def plans(proxy: ProxyServer) -> set[tuple[str, str, str | None]]:
    return set(proxy.pipeline._plans)


async def test_a_plan_is_kept_from_a_targets_second_request_and_a_refusal_never(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url)
    await sent(proxy, get("/once"), get("/doc"))
    assert not plans(proxy)
    await sent(proxy, get("/doc"))
    assert plans(proxy) == {("GET", "/doc", None)}
    elsewhere = get("http://elsewhere.test/doc")  # absolute-form for a host not fronted
    for status, _, body in await sent(proxy, elsewhere, elsewhere, elsewhere):
        assert status == "HTTP/1.1 403 Forbidden"
        assert orjson.loads(body)["error"] == "forbidden_host"
    assert plans(proxy) == {("GET", "/doc", None)}


async def test_a_planned_target_on_another_host_goes_to_that_hosts_route(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = per_tenant
    one = {"name": "one", "match": {"prefix": "/", "hosts": ["one.test"]}, "upstream": origin.url}
    two = {"name": "two", "match": {"prefix": "/", "hosts": ["two.test"]}}
    two["upstream"] = origin.url + "/2"
    proxy = await start_proxy(origin.url, cache={"ttl": 60}, routes=[one, two])
    first = await sent(proxy, get("/doc", "one.test"), get("/doc", "one.test"))
    assert ("GET", "/doc", "one.test") in plans(proxy)
    [(_, fields, body)] = await sent(proxy, get("/doc", "two.test"))
    assert [orjson.loads(b)["path"] for _, _, b in first] == ["/doc", "/doc"]
    assert orjson.loads(body)["path"] == "/2/doc" and fields["x-cache"] == "MISS"


async def test_a_planned_target_with_another_method_goes_to_that_methods_route(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = per_tenant
    posts = {"name": "posts", "match": {"prefix": "/", "methods": ["POST"]}, "cache": False}
    posts["upstream"] = origin.url + "/post"
    reads = {"name": "reads", "match": {"prefix": "/"}, "upstream": origin.url}
    proxy = await start_proxy(origin.url, cache={"ttl": 60}, routes=[posts, reads])
    await sent(proxy, get("/doc"), get("/doc"))
    assert ("GET", "/doc", None) in plans(proxy)
    [(status, _, body)] = await sent(proxy, get("/doc", method="POST"))
    assert status == "HTTP/1.1 200 OK" and orjson.loads(body)["path"] == "/post/doc"


async def test_a_reload_sends_a_planned_target_through_its_new_route(
    origin: Origin, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(origin.url, cache={"ttl": 60})
    before = await sent(proxy, get("/doc"), get("/doc"))
    assert [f["x-cache"] for _, f, _ in before] == ["MISS", "HIT"] and plans(proxy)
    uncached = [{"name": "fresh", "match": {"path": "/doc"}, "cache": False}]
    proxy.apply(parse_config(config_text(origin.url, routes=uncached), env={}))
    [(status, fields, _)] = await sent(proxy, get("/doc"))
    assert status == "HTTP/1.1 200 OK" and fields["x-cache"] == "BYPASS"
    assert origin.hits["/doc"] == 2


async def test_two_authorization_fields_are_refused_on_a_planned_target(
    origin: Origin, start_proxy: StartProxy
) -> None:
    origin.respond = lambda _: web.Response(text="doc", headers={"Cache-Control": "max-age=60"})
    proxy = await start_proxy(origin.url)
    once = "Authorization: Bearer a\r\n"
    twice = f"{once}Authorization: Bearer b\r\n"
    responses = await sent(proxy, get("/doc"), get("/doc"), get("/doc", extra=twice))
    assert plans(proxy) == {("GET", "/doc", None)}
    assert [s for s, _, _ in responses[:2]] == ["HTTP/1.1 200 OK"] * 2
    status, _, body = responses[2]
    assert status == "HTTP/1.1 400 Bad Request"
    assert orjson.loads(body)["message"] == "more than one Authorization field"
    [(status, _, _)] = await sent(proxy, get("/doc", extra=once))
    assert status == "HTTP/1.1 200 OK"


async def test_the_plans_and_the_targets_planned_once_are_bounded(
    origin: Origin, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler, "_PLANS", 2)
    proxy = await start_proxy(origin.url)
    paths = [f"/doc/{i}" for i in range(5)]
    for status, _, _ in await sent(proxy, *map(get, paths)):
        assert status == "HTTP/1.1 200 OK"
    once = proxy.pipeline._planned_once
    assert 1 <= len(once) <= 2 and not plans(proxy)
    for path in paths:
        twice = await sent(proxy, get(path), get(path))
        assert [s for s, _, _ in twice] == ["HTTP/1.1 200 OK"] * 2
        assert 1 <= len(plans(proxy)) <= 2
        assert len(once) <= 2
