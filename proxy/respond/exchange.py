"""One request on its way to its response, as the response side needs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from proxy.edge.ratelimit.limiter import UNCHECKED, Counts
from proxy.http.request_id import RequestIds
from proxy.respond.relay import write_interim

if TYPE_CHECKING:
    from proxy.edge.route import LoadedRoute


class Exchange:
    """The request, the route it matched, and the fields the edge rules add to every
    response to it: CORS for its Origin, the client's rate-limit counts and the request's
    id (`ids` None: request ids are off).

    Made once per request, once the rate-limit stage has run (or an earlier refusal has
    skipped it). The edge fields go out as `edge_lines` in a head written as bytes (a
    prepared hit, a forwarded response), through `apply_edge` onto a header multidict
    otherwise: the same fields either way (tests/respond/test_exchange.py).
    """

    __slots__ = ("_counts", "clients_id", "edge_lines", "ids", "request", "request_id", "route")

    def __init__(
        self,
        request: web.BaseRequest,
        route: LoadedRoute,
        counts: Counts = UNCHECKED,
        ids: RequestIds | None = None,
        rid: str = "",
        clients: bool = False,
    ) -> None:
        """`rid`: the request's id (`ids` None: ids are off); `clients`: it is the one the
        client sent (a fetch whose response may be stored sends one the proxy made)."""
        self.request = request
        self.route = route
        self._counts = counts
        self.ids = ids
        self.request_id = rid
        self.clients_id = clients
        cors, limiter = route.cors, route.rate_limit
        limits = "" if limiter is None else limiter.lines(counts)
        # None: the origin's own rate-limit fields stay (no check ran), which only
        # `apply_edge` can do.
        if limits is None:
            self.edge_lines: str | None = None
        else:
            allowed = "" if cors is None else cors.allow_lines(request.headers)
            self.edge_lines = edge_lines(allowed, limits, ids, rid)

    def interim(self, status: int, headers: CIMultiDict[str]) -> None:
        """Where the upstream's 1xx responses to this request go: to its client, as
        `write_interim` allows. A method, not a closure made per request."""
        write_interim(self.request, status, headers)

    def apply_edge(self, headers: CIMultiDict[str]) -> None:
        """Set the edge fields on a response's headers, replacing the origin's."""
        route = self.route
        if self.ids is not None:
            headers[self.ids.header] = self.request_id
        if route.cors is not None:
            route.cors.apply(self.request.headers, headers)
        if route.rate_limit is not None:
            route.rate_limit.apply(self._counts, headers)


def edge_lines(cors: str, limits: str, ids: RequestIds | None, rid: str) -> str:
    """The edge's fields as lines on the wire: CORS for the request's Origin, the rate-limit
    fields, and the id's line last."""
    return cors + limits if ids is None else f"{cors}{limits}{ids.line_prefix}{rid}\r\n"
