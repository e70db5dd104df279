"""One request on its way to its response, as the response side needs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from proxy.edge.fields import EdgeFields
    from proxy.edge.route import LoadedRoute


class Exchange:
    """The request, the route it matched and the fields the edge policies add to every
    response to it. The cache stage's `Lookup` is one, with what the cache knows besides."""

    __slots__ = ("edge", "request", "route")

    def __init__(self, request: web.BaseRequest, route: LoadedRoute, edge: EdgeFields) -> None:
        self.request = request
        self.route = route
        self.edge = edge
