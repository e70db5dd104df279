"""The fields the edge policies add to every response to one request: CORS for its Origin
and the client's rate-limit counts.

Made once per request, once the rate-limit stage has run (or been skipped by an earlier
refusal), and handed to whichever way the response goes out: `lines` for a head written
as bytes (a prepared hit, a forwarded response), `apply` for a header multidict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multidict import CIMultiDict

from proxy.edge.ratelimit.limiter import UNCHECKED, Counts
from proxy.http.headers import Headers

if TYPE_CHECKING:
    from proxy.edge.route import LoadedRoute


class EdgeFields:
    __slots__ = ("_counts", "_route", "lines", "request_headers")

    def __init__(self, route: LoadedRoute, request_headers: Headers, counts: Counts) -> None:
        self._route = route
        self._counts = counts
        self.request_headers = request_headers
        cors, limiter = route.cors, route.rate_limit
        limits = "" if limiter is None else limiter.lines(counts)
        # None: the origin's own rate-limit fields stay, which only `apply` can do.
        self.lines: str | None = (
            None
            if limits is None
            else limits
            if cors is None
            else cors.allow_lines(request_headers) + limits
        )

    def apply(self, headers: CIMultiDict[str]) -> None:
        """Set them on a response's headers, replacing the origin's."""
        route = self._route
        if route.cors is not None:
            route.cors.apply(self.request_headers, headers)
        if route.rate_limit is not None:
            route.rate_limit.apply(self._counts, headers)


def unchecked(route: LoadedRoute, request_headers: Headers) -> EdgeFields:
    """For a response sent before the rate-limit stage ran (a revoked token's 401)."""
    return EdgeFields(route, request_headers, UNCHECKED)
