"""The upstream request made for a client's: its target, its header lines, and the send.

The pipeline's forward uses it for any method (with the client's body); the cache stage for
bodyless GETs, made conditional when it revalidates a stored response.
"""

from __future__ import annotations

from aiohttp import web
from multidict import istr

from proxy.edge.route import LoadedRoute
from proxy.http.clientaddr import TrustedProxies
from proxy.http.headers import ForwardingRules, request_fields
from proxy.http.request_id import RequestIds, upstream_request_id
from proxy.http.target import Target
from proxy.respond.exchange import Exchange
from proxy.upstream.client import UpstreamClient
from proxy.upstream.http1 import UpstreamResponse

_HOST = istr("Host")  # an istr is looked up without case-folding the name first


class UpstreamFetch:
    def __init__(self, client: UpstreamClient, trusted_proxies: TrustedProxies) -> None:
        self.client = client
        self.trusted_proxies = trusted_proxies  # replaced on a reload (Pipeline.use_routes)
        self.ids: RequestIds | None = None  # set by the Pipeline; None: request ids are off

    def request_head(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        target: Target,
        forwarding: ForwardingRules,
        validating: bool = False,
        request_id: str | None = None,
    ) -> tuple[str, list[str]]:
        """The upstream request target and header lines for `request` (see request_fields),
        with `request_id` in place of any id field the client sent."""
        upstream = route.upstream
        path_qs = target.path_and_query
        if "#" in path_qs:  # not part of a request target (RFC 9112 §3.2): never forwarded
            path_qs = path_qs.partition("#")[0]
        peer = request.remote
        headers = request.headers
        ids = self.ids
        # The client's id field goes whatever it held, however it spelled the name: one id
        # per request, ours (`request_id`). "": ids are off, the client's passes through.
        own = ids.lower if ids is not None and request_id else ""
        fields = request_fields(
            headers,
            forwarding,
            peer=peer,
            peer_trusted=self.trusted_proxies.trusts(peer),
            proto=request.scheme,
            # Absolute-form: the Host header is not what the client asked for (§3.2.2).
            client_host=headers.get(_HOST) if target.authority is None else None,
            upstream_host=upstream.host_header,
            validating=validating,
            own_field=own,
        )
        if own:
            assert ids is not None
            fields.append(f"{ids.line_prefix}{request_id}")
        return upstream.base_path + path_qs, fields

    async def for_cache(
        self,
        ex: Exchange,
        target: Target,
        validators: dict[str, str] | None,
        background: bool = False,
    ) -> UpstreamResponse:
        """A bodyless upstream request on the cache's behalf; the caller releases it.
        `background`: for a refresh no client waits on (see UpstreamClient.send).

        `validators` None: the client's request as it is (HEAD, Range). Otherwise a GET
        whose client conditions are replaced by `validators` (the stored entry's, on a
        revalidation; none on a miss, so the full response comes back to be stored).
        """
        request, route = ex.request, ex.route
        assert route.cache is not None
        query = route.cache.keys.strip_ignored(target.query)
        if query is not target.query:  # what the key ignores must not reach the origin
            target = target._replace(query=query)
        validating = validators is not None
        path_qs, fields = self.request_head(
            request, route, target, route.cache_forwarding, validating, self._cache_fetch_id(ex)
        )
        method = request.method
        if validators is not None:
            method = "GET"
            fields += [f"{name}: {value}" for name, value in validators.items()]
        # A background fetch must not write 1xx responses into a finished exchange.
        interim = None if background else ex.interim
        return await self.client.send(
            method,
            route.upstream.group,
            path_qs,
            fields,
            None,
            route.name,
            interim,
            background=background,
        )

    def _cache_fetch_id(self, ex: Exchange) -> str | None:
        """The id a fetch whose response may be stored sends: one the proxy made, never the
        client's (nothing a client controls and the key does not hold reaches the origin of
        a caching route). The request's own when the proxy made it; coalesced requests share
        the leader's fetch, and so its id; the warmer's fetches (no request) get one each."""
        if self.ids is None:
            return None
        if ex.clients_id or not ex.request_id:
            made = self.ids.new()
            if ex.clients_id:
                upstream_request_id.set(made)  # the access log records both
            return made
        return ex.request_id
