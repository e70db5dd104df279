"""The admin listener: health, statistics, cache purge. Loopback by default; token if configured.

`/livez`, `/readyz` and `/health` need no token: probes and load balancers call them. The
first two say nothing but a state word. The app reaches the proxy only through the ServerView
it is built with (proxy/admin/view.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from proxy import __version__
from proxy.adapters.aiohttp_internals import drop_server_marker
from proxy.admin import dashboard
from proxy.admin.merge import MERGE_HEADER
from proxy.admin.revocation import admin_routes as revocation_routes
from proxy.admin.view import ServerView
from proxy.http.admin_token import AdminToken
from proxy.http.errors import json_error
from proxy.http.hosts import authority_host
from proxy.http.soft_purge import soft_purge
from proxy.http.target import BadTarget, parse_target
from proxy.observe.documents import MERGE_RULES
from proxy.observe.health import overall, without_detail

if TYPE_CHECKING:
    from proxy.upstream.guard import OriginStats

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NOT_CLOSED = frozenset({"open", "half-open"})


def _circuit(o: OriginStats) -> dict[str, object]:
    """One upstream target in /health: down while its circuit is not closed, or while it is
    out of its upstream's balancing (ejected, or failing its health checks)."""
    down = o.circuit in _NOT_CLOSED or bool(o.ejected) or o.health_check == "down"
    entry: dict[str, object] = {"status": "down" if down else "up", "circuit": o.circuit}
    if o.ejected is not None:
        entry["ejected"] = o.ejected
    if o.health_check is not None:
        entry["health_check"] = o.health_check
    return entry


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def token_check(token: str | None) -> Callable[[web.Request], bool]:
    """Whether a request carries the admin token (always True when none is configured):
    `Bearer <token>`, or the token as HTTP Basic auth's password (proxy/http/admin_token.py)."""
    if not token:
        return lambda _: True
    carried_by = AdminToken(token).carried_by
    return lambda request: carried_by(request.headers.get("Authorization", ""))


def token_guard(token: str | None) -> Callable[[Handler], Handler]:
    """Admin operations need the admin token when one is configured (token_check)."""
    allowed = token_check(token)

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not allowed(request):
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


def build_admin_app(view: ServerView) -> web.Application:
    token = view.token
    guard = token_guard(token)
    has_token = token_check(token)

    async def readyz(_: web.Request) -> web.Response:
        return state(view.ready(), "draining")

    async def health(request: web.Request) -> web.Response:
        # No upstream URL here: it may hold a password, and /health needs no token.
        checks = await view.checks()
        if token is None or not has_token(request):
            checks = without_detail(checks)
        # Each upstream's circuit, by route name (never its URL); a `status` each, so that
        # with several workers the merged response shows the worst of theirs. An open circuit
        # is degraded, not unhealthy: this process still serves (stale entries, 503s).
        upstreams = {o.name: _circuit(o) for o in view.circuits()}
        if (limits := view.documents.rate_limits_check()) is not None:
            checks["rate_limits"] = limits  # windows in Redis: degraded while it fails them
        failing = any(u["status"] == "down" for u in upstreams.values())
        checks["circuits"] = {"status": "down" if failing else "up", "upstreams": upstreams}
        status, http_status = overall(checks, view.draining())
        document = {"status": status, "version": __version__, "checks": checks}
        response = _json(document, status=http_status)
        # With workers, the supervisor merges their responses: a probe's time does not add up.
        response.headers[MERGE_HEADER] = "latency_ms=max"
        return response

    async def cache_stats(_: web.Request) -> web.Response:
        return _json(view.documents.cache_stats())

    async def listener_stats(_: web.Request) -> web.Response:
        return _json(view.listener_stats())

    async def purge(request: web.Request) -> web.Response:
        try:
            spec = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return json_error(400, "bad_request", "body must be JSON")
        if not isinstance(spec, dict):
            return json_error(400, "bad_request", 'give exactly one of "url", "prefix", "tag"')
        spec = dict(spec)
        soft = spec.pop("soft", None)
        header = soft_purge(request.headers)
        if not (soft is None or isinstance(soft, bool)) or header is None:
            return json_error(400, "bad_request", "soft must be true or false, Soft-Purge 1 or 0")
        if soft is False and header:
            return json_error(400, "bad_request", '"soft": false, yet Soft-Purge: 1')
        soft = bool(soft or header)
        if len(spec) != 1:
            return json_error(400, "bad_request", 'give exactly one of "url", "prefix", "tag"')
        ((kind, value),) = spec.items()
        if not isinstance(value, str) or not value:
            return json_error(400, "bad_request", f"{kind!r} must be a non-empty string")
        if kind == "url":
            try:
                target = parse_target(value)
            except BadTarget as exc:
                return json_error(400, "bad_request", f"url: {exc}")
            # `http://api.example.com/x`: the entry of the route serving that host (a route
            # may name hosts); `/x`: of the route that takes it without a Host.
            host = authority_host(target.authority) if target.authority is not None else None
            found = await view.purge_url(target.path, target.query, host, soft)
            if found is None:
                return _json({"purged": 0, "soft": True} if soft else {"purged": 0})
            result = found
        elif kind in ("prefix", "tag"):
            result = await view.purge(kind, value, soft)
        else:
            return json_error(400, "bad_request", f"unknown purge kind {kind!r}")
        body: dict[str, object] = {"purged": result.local}
        if soft:
            body["soft"] = True
        if view.shared_tier:
            body["purged_shared"] = result.shared
        if result.error is not None:
            # Other instances were not told yet: accepted, not done.
            message = f"applied here; Redis could not be reached ({result.error}): queued, "
            message += "sent to Redis and every instance when it answers again"
            body.update(queued=True, message=message)
            return _json(body, status=202)
        return _json(body)

    async def reload(_: web.Request) -> web.Response:
        result = view.reload()
        response = _json(result, status=200 if result["reloaded"] else 422)
        # With workers each one reloads the same file: its lists once, not once per worker.
        response.headers[MERGE_HEADER] = "restart_required=first, errors=first"
        return response

    async def index(request: web.Request) -> web.Response:
        response = _json(endpoint_index(request.app, token is not None))
        response.headers[MERGE_HEADER] = "endpoints=first"  # every worker lists the same
        return response

    app = web.Application(middlewares=[json_errors])
    app.on_response_prepare.append(drop_server_marker)  # listen.server_header: false
    app.router.add_get("/", index)
    app.router.add_get(LIVE_PATH, livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/health", health)
    app.router.add_post("/config/reload", guard(reload))
    app.router.add_get("/cache/stats", guard(cache_stats))
    app.router.add_post("/cache/purge", guard(purge))
    app.router.add_get("/listener/stats", guard(listener_stats))
    add_observability(app, view, guard)
    for method, path, handler in revocation_routes(view.revocations, view.revoke):
        # Each worker holds the same list (shared through Redis, or revoked in every worker
        # by the supervisor): its count and an expiry are not to be added up.
        app.router.add_route(method, path, guard(merged(handler, "count=max, expires_at=max")))
    return app


# Also the supervisor's heartbeat to each worker: served by the event loop alone (no
# upstream, no Redis), so silence means the loop itself is stuck.
LIVE_PATH = "/livez"
# What needs no token, whatever the config: probes, load balancers, the index.
PUBLIC = frozenset({"/", LIVE_PATH, "/readyz", "/health"})
_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def endpoint_index(app: web.Application, token_configured: bool) -> dict[str, object]:
    """`GET /`: every endpoint of this admin app, read from its router (never out of date)."""
    endpoints = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or path == "/":
            continue
        needs = token_configured and path not in PUBLIC
        endpoints.append({"method": route.method, "path": path, "token": needs})
    return {"service": "cacheproxy admin", "version": __version__, "endpoints": endpoints}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (no such endpoint, wrong method, body too large) in the JSON
    every other admin error uses, instead of its plain text."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _ERROR_CODES.get(exc.status, "bad_request" if exc.status < 500 else "error")
        if exc.status == 404:
            message = f"no admin endpoint {request.path[:200]}: GET / lists them"
        elif exc.status == 405:
            message = f"{request.method} is not allowed here: GET / lists the endpoints"
        else:
            message = exc.reason
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return json_error(exc.status, code, message, allow)


async def livez(_: web.Request) -> web.Response:
    return _json({"status": "alive"})


def state(ready: bool, why_not: str) -> web.Response:
    """`/readyz`'s response: a word, nothing else (no token needed)."""
    return _json({"status": "ready"} if ready else {"status": why_not}, 200 if ready else 503)


def merged(handler: Handler, rules: str) -> Handler:
    """`handler` with its response's merge rules for the supervisor (proxy/admin/merge.py)."""

    async def with_rules(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        response.headers[MERGE_HEADER] = rules
        return response

    return with_rules


def add_observability(
    app: web.Application, view: ServerView, guard: Callable[[Handler], Handler]
) -> None:
    """Metrics, performance figures, alerts and the dashboard page (all behind the token)."""
    documents = view.documents

    def document(make: Callable[[], object], rules: str = "") -> Handler:
        async def handler(_: web.Request) -> web.Response:
            response = _json(make())
            if rules:  # how the supervisor merges it with the other workers'
                response.headers[MERGE_HEADER] = rules
            return response

        return guard(handler)

    app.router.add_get("/metrics", guard(make_aiohttp_handler(view.registry)))
    app.router.add_get("/performance/cache", document(documents.cache, MERGE_RULES))
    app.router.add_get("/performance/connections", document(documents.connections, MERGE_RULES))
    app.router.add_get("/performance/summary", document(documents.summary, MERGE_RULES))
    app.router.add_get("/alerts/active", document(documents.alerts, MERGE_RULES))
    app.router.add_get("/dashboard", dashboard.explain_refusal(guard(dashboard.page)))
    app.router.add_get("/dashboard/{name}", guard(dashboard.asset))
