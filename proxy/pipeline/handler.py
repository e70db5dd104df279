"""One request, start to finish: every stage in order, in one place.

client -> target check -> route match -> CORS preflight (responded to here)
       -> revoked bearer token (401) -> rate limit (429; headers for every response)
       -> an Upgrade (WebSocket) on a route that allows it: 101 relayed, connections joined
       -> GET/HEAD on a caching route: cache (hit | coalesced fetch -> store)
       -> anything else: forward upstream -> invalidate on unsafe success
       -> encode for the client + the cache's and the edge's fields (respond/) -> respond

`answer` is the same order for the one request the listener may answer before aiohttp
makes a request object of it: a fresh memory hit (or its 429).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple
from weakref import ref

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy, istr

from proxy.adapters.aiohttp_internals import ParsedRequest, request_state
from proxy.cache import policy
from proxy.cache.memory import MemoryStore
from proxy.cache.status import BYPASS, HIT, MISS
from proxy.config.request_id import RequestIdSettings
from proxy.config.revocation import RevocationSettings
from proxy.edge.ratelimit.limiter import Checked
from proxy.edge.revocation import RevocationList
from proxy.http.admin_token import AdminToken
from proxy.http.clientaddr import TrustedProxies
from proxy.http.errors import ClientBodyError, JsonError, json_error
from proxy.http.hosts import authority_host
from proxy.http.request_id import RequestIds
from proxy.http.soft_purge import soft_purge
from proxy.http.target import BadTarget, Target, parse_target
from proxy.observe.metrics import REQUEST_ID, ROUTE
from proxy.observe.tunnels import TunnelMeters
from proxy.pipeline.cache_stage import CacheStage
from proxy.pipeline.refusal_log import RefusalLog
from proxy.pipeline.request_body import BodyCutShort, ClientBody, read_small
from proxy.pipeline.routes import AmbiguousPath, RouteTable
from proxy.pipeline.upgrade import Upgrades
from proxy.pipeline.upstream_fetch import UpstreamFetch
from proxy.pipeline.warming import Warming
from proxy.respond.exchange import Exchange, edge_lines
from proxy.respond.prepared import PreparedResponse, made_here
from proxy.respond.responder import Responder, with_lines
from proxy.shared.tier import PurgeResult, SharedTier
from proxy.upstream.client import UpstreamClient, UpstreamError

if TYPE_CHECKING:
    from proxy.cache.entry import Entry
    from proxy.edge.route import LoadedRoute
    from proxy.respond.prepared import PreparedHead

_AUTHORIZATION = istr("Authorization")
_HOST = istr("Host")  # an istr is looked up without folding the name's case first


# The plans kept (`_planned`, for `handle` and `answer`): a request's target, route, primary
# key (None: its key depends on its fields) and the host it is routed by, by its method,
# target and Host. Cleared when full; a target longer than _PLAN_TARGET_MAX characters is
# planned anew each time (a plan holds it about three times: at most ~12 MB in all).
_PLANS = 4096
_PLAN_TARGET_MAX = 1024
_Plan = tuple[Target, "LoadedRoute", str | None, str | None]

# Request heads answered before, kept with what answered them (`Replay`): at most _REPLAYS
# heads of at most _REPLAY_HEAD_MAX bytes each (~10 MB in all). Cleared when full.
_REPLAYS = 4096
_REPLAY_HEAD_MAX = 2048


class Replay(NamedTuple):
    """What `answer` found for a request head, to answer the same bytes again (`again`)
    without reading them: every stage before the rate limit decides by those bytes alone,
    and the entry, while it is the one stored and fresh, makes the same response. The entry
    and its form are held weakly: an entry the store let go (and a form its entry dropped)
    is freed as if no replay knew it, and ends the replay."""

    request: ParsedRequest  # as first read: `again` asks for it from each new client
    route: LoadedRoute
    entry: ref[Entry]
    head: ref[PreparedHead]
    authorized: bool  # it has an Authorization field: a revocation list may refuse it
    key: str  # the entry's store key (MemoryStore.store_key)
    cors: str  # the CORS lines for its Origin (CorsPolicy.allow_lines)


class Refused(NamedTuple):
    """Why a request is refused before a route is chosen: its status, code and message."""

    status: int
    code: str
    message: str


# A singleton (RFC 9110 §11.6.2): with two, the revocation check, the limiter's key, a
# PURGE's token check and the origin could each read a different one. A plan does not cover
# it: its fields are not in a plan's key.
_TWO_AUTHORIZATIONS = Refused(400, "bad_request", "more than one Authorization field")


def _again(seen: set[int], key: int, bound: int) -> bool:
    """Whether `key`, a hash, was `seen` before; noted if not. Hashes, not what they hash,
    at most `bound` of them (cleared when full): a collision only makes a first time look
    like a second."""
    if key in seen:
        return True
    if len(seen) >= bound:
        seen.clear()
    seen.add(key)
    return False


class Pipeline:
    """Built once at start-up; `handle` is the proxy listener's only handler."""

    def __init__(
        self,
        routes: RouteTable,
        upstream: UpstreamClient,
        store: MemoryStore,
        shared: SharedTier | None = None,
        revocations: RevocationList | None = None,
        warming: Warming | None = None,
        ratelimit_checked: Callable[[str, bool], None] = lambda route, allowed: None,
        request_ids: RequestIdSettings | None = None,
        purgers: TrustedProxies | None = None,
        admin_token: str | None = None,
        tunnels: TunnelMeters | None = None,
    ) -> None:
        """`ratelimit_checked(route name, allowed)` is told of every rate-limit check (the
        metrics). `request_ids`: the `request_id:` section (None: its defaults). `tunnels`:
        where switched connections are counted."""
        self.revocations = revocations or RevocationList(RevocationSettings())
        self.ratelimit_checked = ratelimit_checked
        self.refusals = RefusalLog()  # upstream failures, floods of refusals summarised
        self.upstream = upstream
        self.fetch = UpstreamFetch(upstream, routes.trusted_proxies)
        # The Redis tier shares each stored variant the responder makes.
        self.responder = Responder(store, shared.share_variants if shared is not None else None)
        self.upgrades = Upgrades(self.fetch, self.responder, tunnels or TunnelMeters())
        self.use_routes(routes)
        self.ids: RequestIds | None = None
        self.use_request_ids(request_ids or RequestIdSettings())
        self.use_purgers(purgers or TrustedProxies(), admin_token)
        self.cache = CacheStage(
            store,
            self.fetch,
            self.responder,
            shared,
            coalesce_wait=upstream.config.timeouts.read,
            warming=warming,
        )
        self.hot = self.cache.hot  # the targets `answer` is asked about

    def use_routes(self, routes: RouteTable) -> None:
        """Take a (reloaded) route table. No await here: on the one event loop, a request sees
        the old table or the new one, never a mix; one in flight keeps the policy it matched."""
        self.routes = routes
        # The plans, by (method, target, Host or None): each names a route of `routes`.
        self._plans: dict[tuple[str, str, str | None], _Plan] = {}
        self._planned_once: set[int] = set()  # hashes of keys planned once, not kept
        self._forget_replays()
        self.hosts = routes.hosts
        self.reads_host = routes.hosts is not None or routes.by_host is not None
        self.fetch.trusted_proxies = routes.trusted_proxies
        for compiled in routes.compiled:  # a route that may switch shows its figures from 0
            if compiled.upgrade is not None:
                self.upgrades.meters.route(compiled.name)
        for upstream in routes.groups.values():  # a route's new targets: guards, checks
            self.upstream.bind(upstream.group)

    def use_purgers(self, allowed: TrustedProxies, admin_token: str | None) -> None:
        """Who may PURGE on the proxy port: peers in `purge.allow`, or the admin token."""
        self.purgers = allowed
        self._purge_token = AdminToken(admin_token) if admin_token else None

    def use_request_ids(self, settings: RequestIdSettings) -> None:
        """Take a (reloaded) `request_id:` section; ids made so far stay unique."""
        self.ids = RequestIds(settings) if settings.enabled else None
        self.fetch.ids = self.ids
        self._forget_replays()  # whether a client's id is taken may have changed

    def _forget_replays(self) -> None:
        # Replaced, not cleared: the listener reads `replays` anew for each request head.
        self.replays: dict[bytes, Replay] = {}
        self._answered: set[int] = set()  # hashes of heads answered once (`_answered_before`)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        method = request.method
        fields = request.headers
        ids = self.ids
        rid, clients = "", False
        if ids is not None:
            rid, clients = self._request_id(ids, fields)
            request[REQUEST_ID] = rid  # for the access log
        if method == "CONNECT":
            msg = "CONNECT tunnels are not supported"
            return self._refuse(ids, rid, 405, "method_not_allowed", msg)
        if method == "PURGE":  # never forwarded: the cache's, and only for those allowed
            placed = self._place(request.raw_path, fields)  # routed as a GET: no plan
            if isinstance(placed, Refused):
                return self._refuse(ids, rid, *placed)
            return await self._purge(request, *placed, ids, rid)
        plan = self._planned(method, request.raw_path, fields)
        if isinstance(plan, Refused):
            return self._refuse(ids, rid, *plan)
        target, route, _, host = plan
        request[ROUTE] = route.name  # for the metrics and the access log
        if (
            method == "OPTIONS"
            and route.cors is not None
            and route.cors.is_preflight(method, request.headers)
        ):
            status, headers = route.cors.preflight(request.headers)
            preflight = web.Response(status=status, headers=headers)  # never forwarded
            if ids is not None:
                preflight.headers[ids.header] = rid
            return preflight
        if self.revocations.any:
            refusal = self.revocations.check(fields)
            if refusal is not None:
                return self.responder.error(Exchange(request, route, ids=ids, rid=rid), refusal)
        limiter = route.rate_limit
        if limiter is not None:
            local = limiter.local
            checked = limiter.check_local(request) if local else await limiter.check(request)
            ex, refusal = self._limited(request, route, checked, ids, rid, clients)
            if refusal is not None:
                return refusal
        else:
            ex = Exchange(request, route, ids=ids, rid=rid, clients=clients)
        if route.upgrade is not None:
            offered = self.upgrades.offered(request, route.upgrade)
            if offered is not None:
                return await self._upgrade(ex, target, offered)
        # A GET with a body (search APIs do this) is not keyed by its body: never cache it.
        cacheable = (
            route.cache is not None and method in ("GET", "HEAD") and not request.body_exists
        )
        try:
            if cacheable:
                return await self.cache.serve(ex, target)
            resp = await self.forward(ex, target)
        except UpstreamError as exc:
            self.refusals.failed(route.name, request.method, target.path, exc)
            error = json_error(exc.status, exc.code, exc.message, exc.headers())
            return self.responder.error(ex, error, MISS if cacheable else BYPASS)
        if method not in policy.SAFE_METHODS:  # policy.is_unsafe_method, a call less
            await self.invalidate(request, target, resp, host)
        return resp

    def answer(self, request: ParsedRequest, head_bytes: bytes = b"") -> PreparedResponse | None:
        """A fresh memory hit, answered before aiohttp makes a request or a task of it (the
        listener's fast path, server/listener.py, which hands over only a GET or HEAD
        without a body, upgrade or Expect, in HTTP/1.1 kept alive). `handle`'s stages, in
        its order, through the same calls; None, with nothing done: `handle` it.

        Each stage that could refuse, or that has effects, is asked only once nothing can
        decline any more: the request id, the rate limit (its 429 is answered here too),
        the metrics. A revocation list and an Authorization field, a route the cache stage
        does not answer for (CacheStage.answers), a range or conditions: `handle`. The
        listener asks only about the `hot` targets, whose first stages (target, host, route,
        a URL-only key) are kept as plans (`_planned`) until a reload. `head_bytes`: the
        request's head as it came, when the listener read it whole: a hit is kept as a
        `Replay` of those bytes.
        """
        fields = request.headers
        raw = request.raw_path
        plan = self._planned(request.method, raw, fields)
        if isinstance(plan, Refused):
            return None
        target, route, primary, _ = plan
        if not self.cache.answers(route):
            self.hot.discard(raw)  # none of its requests will be answered here
            return None
        authorized = _AUTHORIZATION in fields
        if authorized and self.revocations.any:  # else it lets it through
            return None
        hit = self.cache.memory_hit(route, target, fields, raw, primary)
        if hit is None:
            return None
        entry, age = hit
        head = self.responder.prepared_head(route, entry, fields)
        if head is None:
            return None
        # Answered here from now on.
        self.cache.used(entry)
        cors = "" if route.cors is None else route.cors.allow_lines(fields)
        if (
            head_bytes
            and self._answered_before(head_bytes)
            and policy.request_cache_control(fields) is policy.EMPTY_CACHE_CONTROL
        ):
            stored = self.cache.store.store_key(entry)
            replay = Replay(request, route, ref(entry), ref(head), authorized, stored, cors)
            self._remember(head_bytes, replay)
        return self._hit(request, route, entry, head, age, cors)

    def again(
        self, head_bytes: bytes, replay: Replay, request: ParsedRequest
    ) -> PreparedResponse | None:
        """`answer`'s response to `request`, whose head is `head_bytes`, bytes it answered
        before (`replays`); None, with nothing done: read it as any other (and, unless a
        revocation list declined it, those bytes are forgotten)."""
        if replay.authorized and self.revocations.any:
            return None
        entry, head = replay.entry(), replay.head()
        if entry is not None and head is not None:
            age = self.cache.plain_age(entry)
            if age is not None and self.cache.store.used(entry, replay.key):
                return self._hit(request, replay.route, entry, head, age, replay.cors)
        self.replays.pop(head_bytes, None)
        return None

    def _answered_before(self, head_bytes: bytes) -> bool:
        """Whether these bytes were answered here before (as far as their hash tells): a
        head is kept as a replay when answered a second time, so that heads never sent
        twice (a client's own id or trace in every request) cost no replay each."""
        # bytes keep their hash: kept as a key next, not hashed again
        return _again(self._answered, hash(head_bytes), _REPLAYS)

    def _remember(self, head_bytes: bytes, replay: Replay) -> None:
        if len(head_bytes) > _REPLAY_HEAD_MAX:
            return
        if len(self.replays) >= _REPLAYS:
            self._forget_replays()
        self.replays[head_bytes] = replay

    def _hit(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        entry: Entry,
        head: PreparedHead,
        age: float,
        cors: str,
    ) -> PreparedResponse:
        """A fresh memory hit's response (or its 429), `entry` counted as used: the stages
        with effects (request id, rate limit), then the request's lines on `head` (`cors`:
        those for its Origin). What the Exchange of `handle` would send, without one."""
        ids = self.ids
        rid, clients = "", False
        state = request_state(request)
        if ids is not None:
            rid, clients = self._request_id(ids, request.headers)
            state[REQUEST_ID] = rid
        state[ROUTE] = route.name
        limiter = route.rate_limit
        limits = ""
        if limiter is not None:
            counts, refusal = checked = limiter.check_local(request)
            if refusal is not None:
                _, refused = self._limited(request, route, checked, ids, rid, clients)
                assert refused is not None
                return made_here(refused)
            self.ratelimit_checked(route.name, True)
            limits = limiter.headers.lines(*counts)  # limiter.lines, for counts it knows
        return with_lines(edge_lines(cors, limits, ids, rid), entry, head, age, HIT)

    def _planned(
        self, method: str, raw_target: str, fields: CIMultiDictProxy[str]
    ) -> _Plan | Refused:
        """What is decided of a request by its method, target and Host alone (the target,
        the route, where the route keys by the URL alone the primary key, and the host it
        is routed by): the same until a reload, so kept from the second request of them on
        (a target asked for once, a cache buster's, costs no plan and evicts none). Or why
        it is refused (`_place`), or its ambiguous path: never kept, decided every time."""
        key = (method, raw_target, fields.get(_HOST) if self.reads_host else None)
        plans = self._plans
        plan = plans.get(key)
        if plan is not None:
            if _AUTHORIZATION in fields and len(fields.getall(_AUTHORIZATION)) > 1:
                return _TWO_AUTHORIZATIONS  # as _place refuses it
            return plan
        placed = self._place(raw_target, fields)
        if isinstance(placed, Refused):
            return placed
        target, host = placed
        try:
            route = self.routes.route_for(method, target.path, host)
        except AmbiguousPath as exc:
            return Refused(400, "ambiguous_path", str(exc))
        if len(raw_target) > _PLAN_TARGET_MAX or not _again(self._planned_once, hash(key), _PLANS):
            return target, route, None, host
        rc = route.cache
        primary = None
        if rc is not None and rc.keys.by_url:
            primary = self.cache.url_key(route, target.path, target.query)
        if len(plans) >= _PLANS:
            plans.clear()
        plan = plans[key] = target, route, primary, host
        return plan

    @staticmethod
    def _request_id(ids: RequestIds, fields: CIMultiDictProxy[str]) -> tuple[str, bool]:
        """The request's id, and whether it is the client's own."""
        given = fields.get(ids.header)
        if given is None or ids.accepted(fields) is None:
            made = ids.made  # made.next(), written out: a call less on every request
            return made.prefix + str(next(made.count)), False
        return given, True

    def _place(
        self, raw_target: str, fields: CIMultiDictProxy[str]
    ) -> tuple[Target, str | None] | Refused:
        """The request's target and the host it is routed by (None: not read), or why it
        is refused before any route is chosen."""
        try:
            target = parse_target(raw_target)
        except BadTarget as exc:
            return Refused(400, "bad_request", str(exc))
        host: str | None = None  # read only when listen.hosts or a route's hosts need it
        if target.authority is not None:
            if target.authority not in self.routes.authorities:
                # Absolute-form for a host we do not front: never an open relay.
                msg = "this proxy only forwards to its upstreams"
                return Refused(403, "forbidden_host", msg)
            # Its Host header is ignored (RFC 9112 §3.2.2), so listen.hosts does not apply:
            # the authority, checked just now against the upstreams, is what it names.
            host = authority_host(target.authority)
        elif self.reads_host:
            # The Host field itself, as listen.hosts reads it (nginx's server_name does the
            # same): never X-Forwarded-Host, so the name let in is the name routed.
            host = fields.get(_HOST)
            if self.hosts is not None and not self.hosts.allows(host):
                msg = "this proxy does not serve the requested host"
                return Refused(421, "misdirected_request", msg)
        if _AUTHORIZATION in fields and len(fields.getall(_AUTHORIZATION)) > 1:
            return _TWO_AUTHORIZATIONS
        return target, host

    def _limited(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        checked: Checked,
        ids: RequestIds | None,
        rid: str,
        clients: bool,
    ) -> tuple[Exchange, web.Response | None]:
        """The exchange once the rate limit has `checked` the request, and its refusal."""
        counts, refusal = checked
        self.ratelimit_checked(route.name, refusal is None)
        ex = Exchange(request, route, counts, ids, rid, clients)
        return ex, None if refusal is None else self.responder.error(ex, refusal)

    async def _upgrade(self, ex: Exchange, target: Target, offered: str) -> web.StreamResponse:
        try:
            return await self.upgrades.serve(ex, target, offered)
        except UpstreamError as exc:
            self.refusals.failed(ex.route.name, ex.request.method, target.path, exc)
            error = json_error(exc.status, exc.code, exc.message, exc.headers())
            return self.responder.error(ex, error, BYPASS)

    async def invalidate(
        self, request: web.BaseRequest, target: Target, resp: web.StreamResponse, host: str | None
    ) -> None:
        """§4.4: a successful unsafe request makes stored responses for its URLs stale (on
        its own host: `host`, as it was routed)."""
        for path_query in policy.invalidation_targets(
            request.method, resp.status, target.path_and_query, resp.headers, request.host
        ):
            path, _, query = path_query.partition("?")
            await self.purge_url(path, query, host)

    async def purge_url(
        self, path: str, query: str, host: str | None, soft: bool = False
    ) -> PurgeResult | None:
        """Remove what a GET of this URL on `host` stored, in every tier (`soft`: mark it
        stale); None: no caching route. `host` picks the route as for a request (None:
        routes naming no host)."""
        route = self.routes.match("GET", path, host)  # where a GET of that URL is cached
        if route.cache is None:
            return None
        return await self.cache.purge("url", self.cache.url_key(route, path, query), soft)

    async def forward(self, ex: Exchange, target: Target) -> web.StreamResponse:
        """Stream the request to the upstream and its response back, holding no large body."""
        request, route = ex.request, ex.route
        body: bytes | ClientBody | None = None
        if request.body_exists:
            config = self.upstream.config
            length = request.content_length
            limit = route.max_body_size
            if limit is not None and length is not None and length > limit:
                # Refused on its declared length: not a byte of it is read or sent on.
                message = f"the request body ({length} bytes) is over {limit} bytes"
                return self._body_failed(ex, 413, "payload_too_large", message)
            try:
                if length is not None and length <= config.buffer_body:
                    body = await read_small(request, length)  # before it takes a slot
                else:
                    body = ClientBody(request, config.timeouts.client_body, limit)
            except BodyCutShort as exc:
                return self._body_failed(ex, 400, "bad_request", str(exc))
        # Nothing forwarded here is stored, whatever the route.
        # Not stored: the client's own id (or the one made for it) may go upstream.
        path_qs, fields = self.fetch.request_head(
            request, route, target, route.forwarding, request_id=ex.request_id
        )
        try:
            up = await self.upstream.send(
                request.method,
                route.upstream.group,
                path_qs,
                fields,
                body,
                route.name,
                ex.interim,
                request.content_length if body is not None else None,
            )
        except ClientBodyError as exc:
            if exc.too_large:  # streamed past the limit: the upstream got no whole request
                return self._body_failed(ex, 413, "payload_too_large", str(exc))
            if exc.timed_out:
                return self._body_failed(ex, 408, "request_timeout", str(exc))
            return self._body_failed(ex, 400, "bad_request", str(exc))
        try:
            return await self.responder.forward(ex, up)
        finally:
            up.release()

    def _body_failed(
        self, ex: Exchange, status: int, code: str, message: str
    ) -> web.StreamResponse:
        """The client's body stalled, broke off or was too large: what is left of it cannot be
        told from a next request, so the connection closes after this response."""
        error = json_error(status, code, message)
        error.force_close()
        return self.responder.error(ex, error)

    async def _purge(
        self,
        request: web.BaseRequest,
        target: Target,
        host: str | None,
        ids: RequestIds | None,
        rid: str,
    ) -> web.StreamResponse:
        """`PURGE /path?query`: what a GET of that URL (on this Host) stored goes, every
        variant, in every tier (as the admin API's url purge); with `Soft-Purge: 1` it stays,
        made stale."""
        if not self._may_purge(request):
            msg = "PURGE needs an allowed address (purge.allow) or the admin token"
            refusal = self._refuse(ids, rid, 405, "method_not_allowed", msg)
            refusal.headers["Allow"] = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
            return refusal
        soft = soft_purge(request.headers)
        if soft is None:
            return self._refuse(ids, rid, 400, "bad_request", "Soft-Purge must be 1 or 0")
        request[ROUTE] = self.routes.match("GET", target.path, host).name
        result = await self.purge_url(target.path, target.query, host, soft)
        body: dict[str, object] = {"purged": 0 if result is None else result.local}
        if soft:
            body["soft"] = True
        if result is not None and result.error is not None:
            body["queued"] = True  # Redis could not be reached: sent when it responds again
        response = web.Response(body=orjson.dumps(body), content_type="application/json")
        if ids is not None:
            response.headers[ids.header] = rid
        return response

    def _may_purge(self, request: web.BaseRequest) -> bool:
        if self.purgers.trusts(request.remote):
            return True
        token = self._purge_token
        return token is not None and token.carried_by(request.headers.get(_AUTHORIZATION, ""))

    @staticmethod
    def _refuse(
        ids: RequestIds | None, request_id: str, status: int, code: str, message: str
    ) -> JsonError:
        """A refusal before the route is known, with the request's id when ids are on."""
        if ids is None:
            return json_error(status, code, message)
        error = json_error(status, code, message, request_id=request_id)
        error.headers[ids.header] = request_id
        return error
