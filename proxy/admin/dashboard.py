"""`GET /dashboard`: one page that polls the admin API and draws it live.

Everything it needs is in the package (proxy/admin/static/: the page, its script and
style, and uPlot 1.6.32, MIT, vendored from its npm package with its licence), so it
works with no network at all. The files are read once, at import.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".LICENSE": "text/plain",
}
# The page loads nothing but its own files and talks to nothing but this listener.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_ASSETS: tuple[str, ...] = ("dashboard.js", "dashboard.css", "uPlot.iife.min.js", "uPlot.min.css")
_ASSETS += ("uPlot.LICENSE",)


def _load(name: str) -> tuple[bytes, str]:
    data = resources.files("proxy.admin").joinpath("static", name).read_bytes()
    suffix = name[name.rfind(".") :]
    return data, _TYPES[suffix]


_PAGE = _load("dashboard.html")
_FILES = {name: _load(name) for name in _ASSETS}


def _response(data: bytes, content_type: str) -> web.Response:
    return web.Response(body=data, content_type=content_type, charset="utf-8", headers=_HEADERS)


async def page(_: web.Request) -> web.Response:
    return _response(*_PAGE)


async def asset(request: web.Request) -> web.Response:
    found = _FILES.get(request.match_info["name"])  # a fixed set: no paths, no traversal
    if found is None:
        raise web.HTTPNotFound()
    return _response(*found)
