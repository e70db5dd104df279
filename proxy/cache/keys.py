"""Cache key building: pure string work, precomputed per route.

Key layout (the method is *not* part of it: HEAD is served from GET
entries)::

    <origin><path>?<query>[|h:<name>=<value>]...[|u:<user-hash>]

``<origin>`` is the route's upstream, host in lower case and base path
(proxy/edge/route.py's ``UpstreamTarget.key_origin``): what is fetched, not the
Host the client named, so two routes forwarding the same path to different
upstreams (virtual hosts, base paths) never share an entry.

The part before the first ``|`` is the *URL key*; ``|`` is percent-encoded in
paths and queries so that split is unambiguous. Purging a URL therefore means
deleting the URL key itself and every key starting with ``url_key + "|"``
(all header / per-user variants). Vary'd variants are selected *within* a
primary key with ``policy.vary_key``.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote

from proxy.cache.policy import Headers
from proxy.http import credentials

ANONYMOUS: Final = "-"
_GLOB_CHARS: Final = frozenset("*?[")
# Credentials must never appear in clear in keys (and so in logs or Redis),
# even if a route lists them as key headers.
_SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})


@dataclass(frozen=True, slots=True)
class KeyRules:
    # fnmatch-style patterns (case-sensitive), e.g. "utm_*", "_": query
    # parameter names to drop; compared on the percent-decoded name.
    query_ignore: tuple[str, ...] = ()
    query_sort: bool = True
    headers: tuple[str, ...] = ()  # request headers in the key, e.g. Accept-Language
    # e.g. "Authorization" or "X-Api-Key": its value is hashed into the key.
    per_user_header: str | None = None
    # HMAC key for credentials in keys (`cache.key_secret`): without it, a key read from a
    # shared store could be matched against guessed low-entropy API keys offline.
    secret: bytes = field(default=b"", repr=False)


def hash_secret(value: str, key: bytes = b"") -> str:
    """HMAC-SHA-256 under `key` (plain SHA-256 without one), hex, first 32 chars (128
    bits): safe to log, store and compare.

    surrogatepass: aiohttp decodes header bytes with surrogateescape, and
    hashing must never raise.
    """
    data = value.encode("utf-8", "surrogatepass")
    if key:
        return hmac.new(key, data, hashlib.sha256).hexdigest()[:32]
    return hashlib.sha256(data).hexdigest()[:32]


def url_part(key: str) -> str:
    """The URL key of any primary key (everything before the first ``|``)."""
    return key.partition("|")[0]


def _escape_url(part: str) -> str:
    # Keeps "|" a reliable separator; a literal "|" and "%7C" then share a
    # key, which servers treat as the same URL anyway.
    return part.replace("|", "%7C") if "|" in part else part


def _escape_value(value: str) -> str:
    # Header values need an injective escape ("%" too), or a crafted value
    # containing "|h:..." could collide with another variant's key.
    if "|" in value or "%" in value:
        return value.replace("%", "%25").replace("|", "%7C")
    return value


def _join_lines(lines: Sequence[str]) -> str:
    # Same normalisation as policy.vary_key: combine lines, trim list items.
    parts = [p.strip() for line in lines for p in line.split(",")]
    return ", ".join(p for p in parts if p)


class KeyBuilder:
    """Builds keys for one route; patterns are compiled once here."""

    __slots__ = ("_exact", "_headers", "_prefixes", "_regex", "_user", "by_url", "rules")

    def __init__(self, rules: KeyRules) -> None:
        self.rules = rules
        exact: set[str] = set()
        prefixes: list[str] = []
        globs: list[str] = []
        for pattern in rules.query_ignore:
            head, star, tail = pattern.partition("*")
            if not _GLOB_CHARS.intersection(pattern):
                exact.add(pattern)
            elif star and not tail and not _GLOB_CHARS.intersection(head):
                prefixes.append(head)  # "utm_*": a plain startswith
            else:
                globs.append(fnmatch.translate(pattern))
        self._exact: frozenset[str] = frozenset(exact)
        self._prefixes: tuple[str, ...] = tuple(prefixes)
        self._regex: re.Pattern[str] | None = re.compile("|".join(globs)) if globs else None
        user = rules.per_user_header.lower() if rules.per_user_header else None
        secret = _SECRET_HEADERS | ({user} if user else set())
        self._headers: tuple[tuple[str, bool], ...] = tuple(
            (name.lower(), name.lower() in secret) for name in rules.headers
        )
        self._user = user
        # The primary key is the URL's alone: the same for every request of one target.
        self.by_url = not self._headers and user is None

    def _ignored(self, name: str) -> bool:
        if "%" in name:
            name = unquote(name)
        return (
            name in self._exact
            or (bool(self._prefixes) and name.startswith(self._prefixes))
            or (self._regex is not None and self._regex.match(name) is not None)
        )

    def normalise_query(self, raw_query: str) -> str:
        """Drop empty and ignored parameters, optionally sort; never re-encode."""
        if not raw_query:
            return ""
        check = bool(self._exact or self._prefixes or self._regex)
        items: list[tuple[str, str]] = []
        for part in raw_query.split("&"):
            if not part:
                continue
            name = part.partition("=")[0]
            if check and self._ignored(name):
                continue
            items.append((name, part))
        if self.rules.query_sort:
            # (name, whole part) is a total order, so the result does not
            # depend on input order ("a" vs "a=" would tie on (name, value)).
            items.sort()
        return "&".join(part for _, part in items)

    def strip_ignored(self, raw_query: str) -> str:
        """`raw_query` without the ignored parameters, the rest byte for byte, in order.

        What the key ignores must not reach the origin either: an origin reflecting
        `utm_source` would otherwise have its response stored for everyone.
        """
        if not raw_query or not (self._exact or self._prefixes or self._regex):
            return raw_query
        parts = raw_query.split("&")
        kept = [p for p in parts if not (p and self._ignored(p.partition("=")[0]))]
        return raw_query if len(kept) == len(parts) else "&".join(kept)

    def url_key(self, origin: str, path: str, raw_query: str) -> str:
        """``origin+path?query``: shared by every variant of one URL. `origin` as the module
        says, normalised by its maker (not on every lookup)."""
        query = self.normalise_query(raw_query) if raw_query else ""
        if "|" in path or "|" in query:
            path, query = _escape_url(path), _escape_url(query)
        return f"{origin}{path or '/'}?{query}"

    def url_prefix(self, origin: str, path_prefix: str) -> str:
        """String prefix of all keys under ``path_prefix`` (purge by prefix)."""
        return f"{origin}{_escape_url(path_prefix)}"

    def primary_key(self, origin: str, path: str, raw_query: str, request_headers: Headers) -> str:
        """URL key plus configured header values and the (hashed) user scope."""
        if self.by_url:  # url_key, written out: every lookup
            query = self.normalise_query(raw_query) if raw_query else ""
            if "|" in path or "|" in query:
                path, query = _escape_url(path), _escape_url(query)
            return f"{origin}{path or '/'}?{query}"
        key = self.url_key(origin, path, raw_query)
        segments = [key]
        for name, secret in self._headers:
            lines = request_headers.getall(name, ())
            if not lines:
                segments.append(f"h:{name}")  # absent ≠ empty ("h:name=")
                continue
            value = _join_lines(lines)
            hashed = hash_secret(value, self.rules.secret) if secret else _escape_value(value)
            segments.append(f"h:{name}={hashed}")
        if self._user is not None:
            value = _join_lines(request_headers.getall(self._user, ()))
            if self._user == "authorization" and value:
                # `Bearer<TAB>x` is `Bearer x` (proxy/http/credentials.py): one user, one entry.
                parsed = credentials.parse(value)
                value = parsed.canonical if parsed is not None else value
            segments.append(f"u:{hash_secret(value, self.rules.secret) if value else ANONYMOUS}")
        return "|".join(segments)


@functools.lru_cache(maxsize=64)
def _builder(rules: KeyRules) -> KeyBuilder:
    return KeyBuilder(rules)


def normalise_query(raw_query: str, rules: KeyRules) -> str:
    """Module-level form of KeyBuilder.normalise_query (builder is cached)."""
    return _builder(rules).normalise_query(raw_query)
