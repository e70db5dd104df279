"""One request, start to finish: every stage in order, in one place.

    client -> target check -> route match -> forward upstream -> respond

Later stages (CORS, revocation, rate limit, cache lookup/store, encoding) slot in
between route match and forwarding, in the order shown in shared/design.md.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from yarl import URL

from proxy.errors import json_error
from proxy.headers import forward_request_headers, forward_response_headers
from proxy.routes import RoutePolicy, RouteTable
from proxy.target import BadTarget, Target, parse_target
from proxy.upstream import UpstreamClient, UpstreamError

log = logging.getLogger("cacheproxy")

# Methods whose responses never carry a body (RFC 9110 §6.4.1).
_NO_BODY_STATUS = frozenset({204, 304})
# Bodies up to this size (by Content-Length) are read whole and sent in one write.
SMALL_BODY = 64 * 1024


class Pipeline:
    """Built once at start-up; `handle` is the proxy listener's only handler."""

    def __init__(self, routes: RouteTable, upstream: UpstreamClient) -> None:
        self.routes = routes
        self.upstream = upstream

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            target = parse_target(request.raw_path)
        except BadTarget as exc:
            return json_error(400, "bad_request", str(exc))
        if target.authority is not None and target.authority not in self.routes.authorities:
            # Absolute-form for a host we do not front: never an open relay.
            return json_error(403, "forbidden_host", "this proxy only forwards to its upstreams")
        if request.method == "CONNECT":
            return json_error(405, "method_not_allowed", "CONNECT tunnels are not supported")

        route = self.routes.match(request.method, target.path)
        try:
            return await self.forward(request, route, target)
        except UpstreamError as exc:
            log.warning("%s %s -> %s: %s", request.method, target.path, exc.code, exc.message)
            return json_error(exc.status, exc.code, exc.message)

    async def forward(
        self, request: web.BaseRequest, route: RoutePolicy, target: Target
    ) -> web.StreamResponse:
        """Stream the request to the upstream and its response back, holding no body."""
        upstream = route.upstream
        url = URL(upstream.origin + upstream.base_path + target.path_and_query, encoded=True)
        body = None
        if request.body_exists:
            if request.headers.get("Expect", "").lower() == "100-continue":
                # The low-level server leaves Expect to us; the client waits for this.
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = request.content
        headers = forward_request_headers(
            request.headers,
            client_ip=request.remote,
            proto=request.scheme,
            original_host=request.headers.get("Host"),
            upstream_host=upstream.host_header,
            content_length=request.content_length if body is not None else None,
        )
        up = await self.upstream.send(request.method, url, headers, body, upstream.origin)
        try:
            return await _relay(request, up)
        finally:
            up.release()


async def _relay(request: web.BaseRequest, up: aiohttp.ClientResponse) -> web.StreamResponse:
    headers = forward_response_headers(up.headers)
    reason = up.reason or None
    if request.method == "HEAD" or up.status in _NO_BODY_STATUS:
        resp = web.StreamResponse(status=up.status, reason=reason, headers=headers)
        await resp.prepare(request)
        return resp
    length = up.content_length
    if length is not None and length <= SMALL_BODY:
        # One write for headers and body instead of two: a syscall saved on every small
        # response, which is most API traffic (measured with py-spy: socket writes dominate).
        try:
            body = await up.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("upstream failed mid-response for %s: %r", request.path, exc)
            return json_error(502, "upstream_unavailable", "upstream closed mid-response")
        return web.Response(status=up.status, reason=reason, headers=headers, body=body)
    resp = web.StreamResponse(status=up.status, reason=reason, headers=headers)
    await resp.prepare(request)
    try:
        async for chunk in up.content.iter_any():
            try:
                await resp.write(chunk)
            except ConnectionResetError:
                return resp  # the client left; releasing `up` unread drops that connection
    except (TimeoutError, aiohttp.ClientError) as exc:
        # Headers are gone already: the only honest signal left is an unfinished body.
        log.warning("upstream failed mid-response for %s: %r", request.path, exc)
        resp.force_close()
        if request.transport is not None:
            request.transport.close()
    return resp
