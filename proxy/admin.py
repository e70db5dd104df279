"""The admin listener: health, statistics, cache purge. Loopback by default; token if configured."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from proxy import dashboard
from proxy.admin_merge import MERGE_HEADER
from proxy.errors import json_error
from proxy.health import overall
from proxy.revocation import admin_routes as revocation_routes
from proxy.target import BadTarget, parse_target

if TYPE_CHECKING:
    from proxy.app import ProxyServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NOT_CLOSED = frozenset({"open", "half-open"})


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _basic_password(given: bytes) -> bytes | None:
    """The password of `Basic base64(user:password)`, or None."""
    scheme, _, value = given.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True).partition(b":")[2]
    except (binascii.Error, ValueError):
        return None


def token_guard(token: str | None) -> Callable[[Handler], Handler]:
    """Admin operations need `Authorization: Bearer <token>` when a token is configured.

    A browser (the dashboard) may send the token as the password of HTTP Basic auth
    instead, with any user name: it asks for it once and sends it with every request.
    """
    # aiohttp decodes header bytes with surrogateescape, so encoding back the same way gives
    # the bytes as sent: no header, however malformed, can make the comparison raise.
    secret = token.encode("utf-8", "surrogateescape") if token else None
    expected = b"Bearer " + secret if secret is not None else None

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if expected is not None and secret is not None:
                given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
                password = _basic_password(given)
                # Constant-time: the comparison must not leak how much of a guess was right.
                if password is not None:
                    allowed = hmac.compare_digest(password, secret)
                else:
                    allowed = hmac.compare_digest(given, expected)
                if not allowed:
                    refusal = json_error(
                        401,
                        "unauthorized",
                        "admin token required",
                        {"WWW-Authenticate": 'Bearer realm="cacheproxy-admin"'},
                    )
                    refusal.headers.add("WWW-Authenticate", 'Basic realm="cacheproxy-admin"')
                    return refusal
            return await handler(request)

        return guarded

    return wrap


def build_admin_app(server: ProxyServer) -> web.Application:
    guard = token_guard(server.config.admin.token)
    cache = server.pipeline.cache

    async def health(_: web.Request) -> web.Response:
        # No upstream URL here: it may hold a password, and /health needs no token.
        status, http_status, checks = await server.health.check()
        # Each upstream's circuit, by route name (never its URL); a `status` each, so that
        # with several workers the merged answer shows the worst of theirs. An open circuit
        # is degraded, not unhealthy: this process still serves (stale entries, 503s).
        upstreams = {
            o.name: {"status": "down" if o.circuit in _NOT_CLOSED else "up", "circuit": o.circuit}
            for o in server.upstream.stats()
        }
        if (limits := server.observer.rate_limits_check()) is not None:
            checks["rate_limits"] = limits  # windows in Redis: degraded while it fails them
        failing = any(u["status"] == "down" for u in upstreams.values())
        checks["circuits"] = {"status": "down" if failing else "up", "upstreams": upstreams}
        status, http_status = overall(checks)
        answer = _json({"status": status, "checks": checks}, status=http_status)
        # With workers, the supervisor merges their answers: a probe's time does not add up.
        answer.headers[MERGE_HEADER] = "latency_ms=max"
        return answer

    async def cache_stats(_: web.Request) -> web.Response:
        stats: dict[str, object] = dataclasses.asdict(cache.store.snapshot())
        if cache.shared is not None:
            shared = cache.shared
            stats["shared"] = {
                **dataclasses.asdict(shared.stats),
                "corrupt": shared.store.corrupt,
                "unauthenticated": shared.store.unauthenticated,
                "oversize": shared.store.oversize,
                "subscribed": shared.subscribed,
                **shared.log.counts(),
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
            route = server.pipeline.routes.match("GET", target.path)
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
            # Other instances were not told yet: accepted, not done.
            message = f"applied here; Redis could not be reached ({result.error}): queued, "
            message += "sent to Redis and every instance when it answers again"
            answer.update(queued=True, message=message)
            return _json(answer, status=202)
        return _json(answer)

    async def reload(_: web.Request) -> web.Response:
        result = server.reload()
        answer = _json(result, status=200 if result["reloaded"] else 422)
        # With workers each one reloads the same file: its lists once, not once per worker.
        answer.headers[MERGE_HEADER] = "restart_required=first, errors=first"
        return answer

    app = web.Application()
    app.router.add_get("/health", health)
    if server.admin_path is not None:
        # A worker's, on its private socket: the supervisor's heartbeat. Answered by the event
        # loop alone (no upstream, no Redis), so silence means the loop itself is stuck.
        app.router.add_get(ALIVE_PATH, alive)
    app.router.add_post("/config/reload", guard(reload))
    app.router.add_get("/cache/stats", guard(cache_stats))
    app.router.add_post("/cache/purge", guard(purge))
    app.router.add_get("/listener/stats", guard(listener_stats))
    add_observability(app, server, guard)
    for method, path, handler in revocation_routes(server.revocations):
        app.router.add_route(method, path, guard(handler))
    return app


ALIVE_PATH = "/__alive"


async def alive(_: web.Request) -> web.Response:
    return web.Response(text="alive")


def add_observability(
    app: web.Application, server: ProxyServer, guard: Callable[[Handler], Handler]
) -> None:
    """Metrics, performance figures, alerts and the dashboard page (all behind the token)."""
    observer = server.observer

    def document(make: Callable[[], object]) -> Handler:
        async def handler(_: web.Request) -> web.Response:
            return _json(make())

        return guard(handler)

    app.router.add_get("/metrics", guard(make_aiohttp_handler(observer.registry)))
    app.router.add_get("/performance/cache", document(observer.cache_doc))
    app.router.add_get("/performance/connections", document(observer.connections_doc))
    app.router.add_get("/performance/summary", document(observer.summary_doc))
    app.router.add_get("/alerts/active", document(observer.alerts_doc))
    app.router.add_get("/dashboard", guard(dashboard.page))
    app.router.add_get("/dashboard/{name}", guard(dashboard.asset))
