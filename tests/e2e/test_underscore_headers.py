"""Header names with an underscore: read by CGI/WSGI origins as their dash spelling.

`X_Forwarded_Host` reaches a wsgiref application as HTTP_X_FORWARDED_HOST, exactly like
`X-Forwarded-Host`: unkeyed, it shapes a response the cache stores for everyone.
"""

from __future__ import annotations

import asyncio
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse

import aiohttp
from multidict import CIMultiDict

from proxy.http.headers import ForwardingRules
from tests.conftest import Origin, StartProxy, forward_request_headers, get

SPOOFS = {
    "X_Forwarded_Host": "evil.example",
    "X_Forwarded_For": "198.51.100.66",
    "X_Original_URL": "/admin",
    "X_HTTP_Method_Override": "DELETE",
    "X_Real_IP": "198.51.100.66",
}


def forwarded(rules: ForwardingRules, headers: dict[str, str], trusted: bool = False) -> set[str]:
    out = forward_request_headers(
        CIMultiDict(headers),
        rules,
        peer="192.0.2.10",
        peer_trusted=trusted,
        proto="http",
        client_host="shop.example",
        upstream_host="api:9000",
    )
    return set(out)


def test_underscore_spellings_of_managed_fields_never_pass() -> None:
    plain = ForwardingRules.build(None, None)  # a request whose response is never stored
    for trusted in (False, True):
        names = forwarded(plain, {**SPOOFS, "X_Custom": "1"}, trusted)
        assert not set(SPOOFS) & names
        assert "X_Custom" in names  # nothing stored: an unkeyed name harms no one else


def test_fetches_by_the_cache_drop_every_underscore_name_but_keyed_ones() -> None:
    cached = ForwardingRules.build(None, ("X_Tenant",))
    names = forwarded(cached, {**SPOOFS, "X_Custom": "1", "X_Tenant": "t1", "X-Ok": "1"})
    assert names & {"X_Custom", *SPOOFS} == set()
    assert {"X_Tenant", "X-Ok"} <= names
    allowed = ForwardingRules.build(None, (), underscores=True)
    names = forwarded(allowed, {**SPOOFS, "X_Custom": "1"})
    assert "X_Custom" in names and not set(SPOOFS) & names


def _wsgi_origin() -> tuple[WSGIServer, int]:
    """An origin as the attack run found one: wsgiref, building links from the forwarded host."""

    def app(environ: dict[str, str], start_response: StartResponse) -> list[bytes]:
        host = environ.get("HTTP_X_FORWARDED_HOST", "api.example")
        start_response(
            "200 OK",
            [("Cache-Control", "max-age=60"), ("Link", f"<https://{host}/next>; rel=next")],
        )
        return [b"{}"]

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    return server, server.server_port


async def test_an_underscore_spelling_cannot_poison_a_stored_response(
    start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    server, port = _wsgi_origin()
    loop = asyncio.get_running_loop()
    serving = loop.run_in_executor(None, server.serve_forever)
    try:
        proxy = await start_proxy(f"http://127.0.0.1:{port}", cache={"ttl": 60})
        resp, _ = await get(http, proxy, "/feed", headers=SPOOFS)
        assert resp.headers["X-Cache"] == "MISS"
        assert "evil" not in resp.headers["Link"]
        resp, _ = await get(http, proxy, "/feed")
        assert resp.headers["X-Cache"] == "HIT" and "evil" not in resp.headers["Link"]
    finally:
        server.shutdown()
        await serving
        server.server_close()


async def test_a_route_may_forward_them_and_uncached_routes_keep_unmanaged_ones(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        origin.url,
        cache={"ttl": 60},
        routes=[
            {"match": {"prefix": "/open/"}, "cache": {"underscores_in_headers": True}},
            {"match": {"prefix": "/live/"}, "cache": False},
        ],
    )
    for path in ("/feed", "/open/feed", "/live/feed"):
        await get(http, proxy, path, headers={**SPOOFS, "X_Custom": "1"})
    seen = {r.path: set(r.headers) for r in origin.requests}
    assert not any(set(SPOOFS) & names for names in seen.values())
    assert "X_Custom" not in seen["/feed"]
    assert "X_Custom" in seen["/open/feed"] and "X_Custom" in seen["/live/feed"]
