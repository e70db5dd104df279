"""The admin listener: health, statistics, cache purge. Loopback by default; token if configured."""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from proxy.errors import json_error
from proxy.target import BadTarget, parse_target

if TYPE_CHECKING:
    from proxy.app import ProxyServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NOT_CLOSED = frozenset({"open", "half-open"})


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
        # No upstream URL here: it may hold a password, and /health needs no token.
        checks: dict[str, object] = {}
        status = "healthy"
        if server.redis is not None:
            guard = server.redis.guard
            shared = cache.shared
            ok = guard.healthy and (shared is None or shared.subscribed)
            checks["redis"] = {"status": "up" if ok else "down", "error": guard.last_error}
            if not ok:
                status = "degraded"  # still serving: from memory and the upstream
        # Each upstream's circuit, by route name (never its URL). A `status` of its own, so
        # that with several workers the merged answer shows the worst of theirs.
        upstreams = {
            o.name: {"status": "down" if o.circuit in _NOT_CLOSED else "up", "circuit": o.circuit}
            for o in server.upstream.stats()
        }
        failing = any(u["status"] == "down" for u in upstreams.values())
        checks["upstream"] = {"status": "down" if failing else "up", "upstreams": upstreams}
        if failing:
            status = "degraded"  # still serving: from the cache, and 503s for the rest
        return _json({"status": status, "checks": checks})

    async def cache_stats(_: web.Request) -> web.Response:
        stats: dict[str, object] = dataclasses.asdict(cache.store.snapshot())
        if cache.shared is not None:
            stats["shared"] = {
                **dataclasses.asdict(cache.shared.stats),
                "corrupt": cache.shared.store.corrupt,
                "subscribed": cache.shared.subscribed,
            }
        return _json(stats)

    async def listener_stats(_: web.Request) -> web.Response:
        return _json(dataclasses.asdict(server.listener_stats))

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
        if kind == "url":
            try:
                target = parse_target(value)
            except BadTarget as exc:
                return json_error(400, "bad_request", f"url: {exc}")
            route = routes.match("GET", target.path)
            if route.cache is None:
                return _json({"purged": 0})
            result = await cache.purge("url", cache.url_key(route, target.path, target.query))
        elif kind in ("prefix", "tag"):
            result = await cache.purge(kind, value)
        else:
            return json_error(400, "bad_request", f"unknown purge kind {kind!r}")
        answer: dict[str, object] = {"purged": result.local}
        if cache.shared is not None:
            answer["purged_shared"] = result.shared
        if result.error is not None:
            # Other instances were not told: say so rather than report success.
            answer.update(error="purge_incomplete", message=result.error)
            return _json(answer, status=503)
        return _json(answer)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/cache/stats", guard(cache_stats))
    app.router.add_post("/cache/purge", guard(purge))
    app.router.add_get("/listener/stats", guard(listener_stats))
    return app
