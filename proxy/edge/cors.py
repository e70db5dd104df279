"""CORS: the rules (`CorsRules`) built from the `cors:` section (proxy/config/cors.py).

On a route with CORS configured the proxy owns CORS: preflights are served here and never
reach the upstream, and `apply` strips whatever `Access-Control-*` headers the upstream sent
before adding its own, so a response never carries two conflicting sets of CORS headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from multidict import CIMultiDict, CIMultiDictProxy, istr

from proxy.config.cors import ORIGIN_RE, CorsSettings
from proxy.http import regex as linear_regex
from proxy.http.vary import append_vary

__all__ = ["CorsRules"]

Headers = CIMultiDict[str] | CIMultiDictProxy[str]

# Real origins are short (a hostname is at most 253 characters); anything much longer is
# refused outright, which also bounds the work a configured regex can be made to do.
_MAX_ORIGIN_LEN = 512
_ORIGIN_CACHE_SIZE = 1024

_ORIGIN = istr("Origin")  # case-folded once: asked on every response
_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def _wildcard_pattern(scheme: str, domain: str, port: str | None) -> re.Pattern[str]:
    # One or more labels, then a dot, then the domain: `*.example.com` never matches the
    # bare `example.com`, `evilexample.com` or `example.com.evil.net`.
    suffix = re.escape(f":{port}") if port else ""
    return re.compile(
        rf"{re.escape(scheme)}://[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.{re.escape(domain)}{suffix}"
    )


def _single(headers: Headers, name: str) -> str | None:
    # A repeated Origin is not something a browser sends; treat it as absent rather
    # than guess which one the rest of the stack will look at.
    values = headers.getall(name, ())
    return values[0] if len(values) == 1 else None


class CorsRules:
    """Per-route CORS decisions; everything configurable is resolved in `__init__`."""

    __slots__ = (
        "_any_header",
        "_any_lines",
        "_any_method",
        "_any_origin",
        "_credentials",
        "_exact",
        "_expose_value",
        "_headers",
        "_headers_value",
        "_max_age_value",
        "_methods",
        "_methods_value",
        "_origin_cache",
        "_origin_lines",
        "_patterns",
        "config",
    )

    def __init__(self, config: CorsSettings) -> None:
        self.config = config
        # `*` with credentials is refused by CorsSettings, so `*` always gets `*` back.
        self._any_origin = "*" in config.allow_origins
        exact: set[str] = set()
        patterns: list[Callable[[str], object]] = []
        for origin in config.allow_origins:
            match = ORIGIN_RE.fullmatch(origin)
            if match is None:  # only "*"; CorsSettings validated the rest
                continue
            if match["wild"]:
                wildcard = _wildcard_pattern(match["scheme"], match["host"], match["port"])
                patterns.append(wildcard.fullmatch)
            else:
                exact.add(origin)
        # Candidates are lowercased before matching, so user patterns ignore case too.
        patterns.extend(
            linear_regex.full_matcher(p, ignore_case=True) for p in config.allow_origin_regex
        )
        self._exact = frozenset(exact)
        self._patterns = tuple(patterns)
        self._origin_cache: dict[str, bool] = {}
        self._origin_lines: dict[str, str] = {}

        self._any_method = "*" in config.allow_methods
        self._methods = frozenset(config.allow_methods)
        self._methods_value = ", ".join(config.allow_methods)
        self._any_header = "*" in config.allow_headers
        self._headers = frozenset(h.lower() for h in config.allow_headers)
        self._headers_value = ", ".join(config.allow_headers)
        self._expose_value = ", ".join(config.expose_headers)
        self._credentials = config.allow_credentials
        self._max_age_value = None if config.max_age is None else str(config.max_age)
        self._any_lines = "Access-Control-Allow-Origin: *\r\n"
        if self._expose_value:
            self._any_lines += f"Access-Control-Expose-Headers: {self._expose_value}\r\n"

    def allowed_origin(self, origin: str) -> bool:
        """Whether *origin* (an `Origin` header value) may read responses of this route."""
        if self._any_origin:
            return True
        cached = self._origin_cache.get(origin)
        if cached is not None:
            return cached
        if len(origin) > _MAX_ORIGIN_LEN:
            return False
        key = origin.lower()
        allowed = key in self._exact or any(matches(key) for matches in self._patterns)
        if len(self._origin_cache) >= _ORIGIN_CACHE_SIZE:
            # Evict the oldest entry: O(1), and a client cycling origins only costs re-matching.
            del self._origin_cache[next(iter(self._origin_cache))]
        self._origin_cache[origin] = allowed
        return allowed

    def allow_lines(self, request_headers: Headers) -> str:
        """The lines `apply` would add for this request's Origin, as they go on the wire;
        "" when it adds none or only ones that never depend on the request (`*`)."""
        if self._any_origin:
            return ""
        origins = request_headers.getall(_ORIGIN, ())
        if len(origins) != 1:
            return ""
        origin = origins[0]
        if len(origin) > _MAX_ORIGIN_LEN:
            return ""  # refused by allowed_origin, and not worth remembering
        lines = self._origin_lines.get(origin)
        if lines is None:
            lines = ""
            if self.allowed_origin(origin) and "\r" not in origin and "\n" not in origin:
                lines = f"Access-Control-Allow-Origin: {origin}\r\n"
                if self._credentials:
                    lines += "Access-Control-Allow-Credentials: true\r\n"
                if self._expose_value:
                    lines += f"Access-Control-Expose-Headers: {self._expose_value}\r\n"
            if len(self._origin_lines) >= _ORIGIN_CACHE_SIZE:
                del self._origin_lines[next(iter(self._origin_lines))]
            self._origin_lines[origin] = lines
        return lines

    @property
    def static_lines(self) -> str:
        """What `apply` adds whatever the request: the lines for `*`, or nothing."""
        return self._any_lines if self._any_origin else ""

    @property
    def varies(self) -> bool:
        """Whether `apply` adds `Origin` to the response's Vary."""
        return not self._any_origin

    @staticmethod
    def is_preflight(method: str, headers: Headers) -> bool:
        """An OPTIONS request carrying `Origin` and `Access-Control-Request-Method`."""
        return (
            method == "OPTIONS"
            and "Origin" in headers
            and "Access-Control-Request-Method" in headers
        )

    def preflight(self, headers: Headers) -> tuple[int, CIMultiDict[str]]:
        """Respond to a preflight: (204, CORS headers) or (403, no CORS headers). Empty body."""
        out: CIMultiDict[str] = CIMultiDict(Vary=_PREFLIGHT_VARY)
        out["Content-Length"] = "0"
        origin = _single(headers, "Origin")
        method = headers.get("Access-Control-Request-Method", "").strip()
        if origin is None or not method or not self.allowed_origin(origin):
            return 403, out
        if not self._any_method and method not in self._methods:
            return 403, out
        requested = [
            name.strip().lower()
            for value in headers.getall("Access-Control-Request-Headers", ())
            for name in value.split(",")
            if name.strip()
        ]
        if not self._any_header and not self._headers.issuperset(requested):
            return 403, out

        out["Access-Control-Allow-Origin"] = "*" if self._any_origin else origin
        out["Access-Control-Allow-Methods"] = method if self._any_method else self._methods_value
        allow_headers = ", ".join(requested) if self._any_header else self._headers_value
        if allow_headers:
            out["Access-Control-Allow-Headers"] = allow_headers
        if self._credentials:
            out["Access-Control-Allow-Credentials"] = "true"
        if self._max_age_value is not None:
            out["Access-Control-Max-Age"] = self._max_age_value
        return 204, out

    def apply(self, request_headers: Headers, response_headers: CIMultiDict[str]) -> None:
        """Set the CORS headers of an actual (non-preflight) response, in place.

        Upstream `Access-Control-*` headers are removed first: the proxy's config is the
        single source of truth on this route. With `allow_origins: ["*"]` the response is
        `*` for every request (with or without `Origin`), so it never varies by origin
        and needs no `Vary: Origin`. Otherwise `Vary: Origin` is always added, since the
        response depends on the origin even when it is absent or refused.
        """
        stale = [k for k in response_headers if k[:15].lower() == "access-control-"]
        for name in stale:
            response_headers.popall(name, None)

        if self._any_origin:
            response_headers["Access-Control-Allow-Origin"] = "*"
        else:
            append_vary(response_headers, "Origin")
            origin = _single(request_headers, "Origin")
            if origin is None or not self.allowed_origin(origin):
                return
            response_headers["Access-Control-Allow-Origin"] = origin
            if self._credentials:
                response_headers["Access-Control-Allow-Credentials"] = "true"
        if self._expose_value:
            response_headers["Access-Control-Expose-Headers"] = self._expose_value
