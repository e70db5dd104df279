"""`GET /dashboard`: one page that polls the admin API and draws it live.

Everything it needs is in the package (proxy/admin/static/: the page, its script and
style, and uPlot 1.6.32, MIT, vendored from its npm package with its licence), so it
works with no network at all. The files are read once, at import.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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


_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cacheproxy · admin token required</title>
<link rel="icon" href="data:,"></head>
<body style="font-family: sans-serif; max-width: 44em; margin: 3em auto; line-height: 1.5">
<h1>cacheproxy: admin token required</h1>
<p>This admin listener has a token (<code>admin.token</code>). Open the dashboard as
<code>http://admin:TOKEN@{host}/dashboard</code>: any user name, the token as the password;
or reload this page and give them when the browser asks.</p>
</body></html>
"""


def explain_refusal(guarded: Handler) -> Handler:
    """The page behind the token guard; refused, a browser gets a page saying how to log in
    (what a person sees when the browser gives up asking), anything else the JSON 401."""

    async def page_or_login(request: web.Request) -> web.StreamResponse:
        response = await guarded(request)
        if response.status != 401 or "text/html" not in request.headers.get("Accept", ""):
            return response
        text = _LOGIN.format(host=html.escape(request.host))
        login = web.Response(
            status=401, text=text, content_type="text/html", charset="utf-8", headers=_HEADERS
        )
        for challenge in response.headers.getall("WWW-Authenticate", ()):
            login.headers.add("WWW-Authenticate", challenge)
        return login

    return page_or_login
