"""RFC 9111 §4.3.5 (a HEAD response updates the stored GET) through the real proxy. On a
caching route a HEAD never reaches the origin as HEAD: a miss is fetched as a GET and
stored, a stale entry is revalidated with a conditional GET, so what §4.3.5 asks (new
validators replace the entry, matching ones freshen it) happens through §4.3.4 and a full
response, which carries the new body as well as the new fields."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from tests.conftest import Origin, StartProxy, get, url_of


async def test_a_head_revalidates_the_stored_get_and_an_etag_change_replaces_it(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    version = 1
    seen: list[tuple[str, str | None]] = []

    def respond(request: web.Request) -> web.Response:
        condition = request.headers.get("If-None-Match")
        seen.append((request.method, condition))
        headers = {"Cache-Control": "no-cache", "ETag": f'"v{version}"'}
        if condition == f'"v{version}"':
            return web.Response(status=304, headers=headers)
        return web.Response(text=f"body v{version}", headers=headers)

    origin.respond = respond
    proxy = await start_proxy(origin.url, cache={"ttl": 60})

    async def head() -> aiohttp.ClientResponse:
        async with http.head(url_of(proxy, "/r")) as resp:
            assert await resp.read() == b""
            return resp

    resp, body = await get(http, proxy, "/r")
    assert body == b"body v1"
    resp = await head()  # validators match: the entry is freshened, not refetched
    assert resp.headers["X-Cache"] == "REVALIDATED" and resp.headers["ETag"] == '"v1"'
    version = 2
    resp = await head()  # the origin's ETag changed: the entry is replaced
    assert resp.headers["ETag"] == '"v2"'
    assert resp.headers["Content-Length"] == str(len("body v2"))
    resp, body = await get(http, proxy, "/r")  # a 304 to the new entry's validator
    assert resp.headers["X-Cache"] == "REVALIDATED" and body == b"body v2"
    assert seen == [("GET", None), ("GET", '"v1"'), ("GET", '"v1"'), ("GET", '"v2"')]
