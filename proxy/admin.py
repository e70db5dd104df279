"""The admin listener: health and cache purge. Loopback by default; token if configured."""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from proxy.errors import json_error
from proxy.revocation import admin_routes as revocation_routes
from proxy.target import BadTarget, parse_target

if TYPE_CHECKING:
    from proxy.app import ProxyServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def token_guard(token: str | None) -> Callable[[Handler], Handler]:
    """Admin operations need `Authorization: Bearer <token>` when a token is configured."""
    # aiohttp decodes header bytes with surrogateescape, so encoding back the same way gives
    # the bytes as sent: no header, however malformed, can make the comparison raise.
    expected = f"Bearer {token}".encode("utf-8", "surrogateescape") if token else None

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if expected is not None:
                given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
                # Constant-time: the comparison must not leak how much of a guess was right.
                if not hmac.compare_digest(given, expected):
                    return json_error(
                        401,
                        "unauthorized",
                        "admin token required",
                        {"WWW-Authenticate": 'Bearer realm="cacheproxy-admin"'},
                    )
            return await handler(request)

        return guarded

    return wrap


def build_admin_app(server: ProxyServer) -> web.Application:
    guard = token_guard(server.config.admin.token)
    cache = server.pipeline.cache
    routes = server.pipeline.routes

    async def health(_: web.Request) -> web.Response:
        return _json({"status": "ok", "upstream": server.config.upstream.url})

    async def cache_stats(_: web.Request) -> web.Response:
        return _json(dataclasses.asdict(cache.store.snapshot()))

    async def purge(request: web.Request) -> web.Response:
        try:
            spec = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return json_error(400, "bad_request", "body must be JSON")
        if not isinstance(spec, dict) or len(spec) != 1:
            return json_error(400, "bad_request", 'give exactly one of "url", "prefix", "tag"')
        ((kind, value),) = spec.items()
        if not isinstance(value, str) or not value:
            return json_error(400, "bad_request", f"{kind!r} must be a non-empty string")
        store = cache.store
        if kind == "url":
            try:
                target = parse_target(value)
            except BadTarget as exc:
                return json_error(400, "bad_request", f"url: {exc}")
            route = routes.match("GET", target.path)
            if route.cache is None:
                return _json({"purged": 0})
            purged = store.purge_url(cache.url_key(route, target.path, target.query))
        elif kind == "prefix":
            purged = store.purge_prefix(value)
        elif kind == "tag":
            purged = store.purge_tag(value)
        else:
            return json_error(400, "bad_request", f"unknown purge kind {kind!r}")
        return _json({"purged": purged})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/cache/stats", guard(cache_stats))
    app.router.add_post("/cache/purge", guard(purge))
    for method, path, handler in revocation_routes(server.revocations):
        app.router.add_route(method, path, guard(handler))
    return app
