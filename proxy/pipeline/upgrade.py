"""Upgrade requests (WebSocket) on routes that allow them: sent upstream with their Upgrade
field, and on the upstream's 101 the two connections joined (respond/tunnel.py).

Never cached, on any route: the request goes upstream as a forwarded one does, and a response
other than 101 is relayed as any forwarded response. The upstream connection leaves the pool
for good at the 101, and gives back its slot of upstream.pool.max_connections then: that bound
is for requests in flight, and a WebSocket held open for hours would starve them. Tunnels have
their own bound instead, the route's upgrade.max_open, per process; an upgrade request waiting
for its answer counts against it, so a burst cannot overshoot it.
"""

from __future__ import annotations

import time

from aiohttp import web

from proxy.adapters.aiohttp_internals import Connection
from proxy.cache.status import BYPASS
from proxy.http.errors import UpstreamError, json_error
from proxy.http.headers import forward_response_headers
from proxy.http.target import Target
from proxy.http.upgrade import UpgradeRules
from proxy.observe.metrics import CACHE_RESULT, TUNNELLED
from proxy.observe.tunnels import TunnelCounts, TunnelMeters
from proxy.pipeline.upstream_fetch import UpstreamFetch
from proxy.respond.exchange import Exchange
from proxy.respond.relay import PHRASES
from proxy.respond.responder import Responder
from proxy.respond.tunnel import Tunnel


class Upgrades:
    def __init__(self, fetch: UpstreamFetch, responder: Responder, meters: TunnelMeters) -> None:
        self.fetch = fetch
        self.responder = responder
        self.meters = meters

    @staticmethod
    def offered(request: web.BaseRequest, rules: UpgradeRules) -> str | None:
        """The Upgrade value to send upstream for `request`, or None: it is plain HTTP."""
        offered = rules.offered(
            request.method, request.version, request.body_exists, request.headers
        )
        protocol = request.protocol
        # aiohttp must have held the bytes after the head unparsed, as llhttp does for every
        # request that asks to upgrade as RFC 9110 has it: checked, not assumed.
        if offered is None or not isinstance(protocol, Connection) or not protocol.upgrading:
            return None
        return offered

    async def serve(self, ex: Exchange, target: Target, offered: str) -> web.StreamResponse:
        """`offered`: the Upgrade value to send (`offered`)."""
        route = ex.route
        rules = route.upgrade
        assert rules is not None
        counts = self.meters.route(route.name)
        if counts.open >= rules.max_open:
            counts.refused += 1
            message = f"this route has {rules.max_open} upgraded connections open"
            refusal = json_error(503, "too_many_upgrades", message, {"Retry-After": "1"})
            return self.responder.error(ex, refusal, BYPASS)
        counts.open += 1
        try:
            return await self._switch(ex, target, offered, rules, counts)
        finally:
            counts.open -= 1

    async def _switch(
        self,
        ex: Exchange,
        target: Target,
        offered: str,
        rules: UpgradeRules,
        counts: TunnelCounts,
    ) -> web.StreamResponse:
        request, route = ex.request, ex.route
        path_qs, fields = self.fetch.request_head(
            request, route, target, route.forwarding, request_id=ex.request_id
        )
        fields += ["Connection: Upgrade", f"Upgrade: {offered}"]  # hop-by-hop: ours to set
        up = await self.fetch.client.send(
            "GET",
            route.upstream.group,
            path_qs,
            fields,
            None,
            route.name,
            ex.interim,
            upgrade=True,
        )
        try:
            if up.status != 101:  # declined: an ordinary response, never stored
                return await self.responder.forward(ex, up)
            switched = up.headers.getall("Upgrade", [])
            if not UpgradeRules.switched_as_offered(offered, switched):
                raise UpstreamError(
                    502,
                    "upstream_invalid_response",
                    "The upstream API switched to a protocol that was not asked for",
                    detail=f"upstream of route {route.name} switched to {switched}, not {offered}",
                )
            transport, tail = up.hand_over()
        finally:
            up.release()  # the slot goes back; a 101 not handed over is closed
        headers = forward_response_headers(up.headers)
        headers["Connection"] = "Upgrade"
        headers["Upgrade"] = up.headers["Upgrade"]
        ex.apply_edge(headers)
        resp = web.StreamResponse(status=101, reason=up.reason or PHRASES[101], headers=headers)
        resp[CACHE_RESULT] = BYPASS.label
        resp.force_close()  # whatever happens, nothing after this is HTTP
        protocol = request.protocol
        assert isinstance(protocol, Connection)  # the proxy port's (server/listener.py)
        client = request.transport
        if client is None:  # the client went while the upstream answered
            if transport is not None:
                transport.abort()
            return resp
        try:
            await resp.prepare(request)
        except ConnectionError:  # the client went as the head was written
            if transport is not None:
                transport.abort()
            return resp
        counts.opened += 1
        if transport is None:  # the upstream closed at once: what it sent, then the close
            client.write(tail)
            counts.to_client += len(tail)
            counts.closed["upstream"] += 1
            return resp
        joined = time.perf_counter()
        try:
            await Tunnel(protocol, transport, rules.idle_timeout, counts).run(tail)
        finally:
            resp[TUNNELLED] = time.perf_counter() - joined
        return resp
