"""A stored response: everything a hit needs, computed once when it is stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache import policy
from proxy.cache.policy import CacheControl, CacheRules

# What one entry costs beyond its bytes (the object, headers, index slots): measured
# with tracemalloc over 100,000 small entries; counted so max_memory bounds real memory.
ENTRY_OVERHEAD = 1500
HEADER_OVERHEAD = 120


@dataclass(slots=True)
class Entry:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]  # as forwarded to clients: hop-by-hop already gone
    body: bytes
    request_time: float
    response_time: float
    initial_age: float
    lifetime: float
    cc: CacheControl
    vary: tuple[str, ...]  # request header names the origin varies on
    vary_values: tuple[str, ...]  # their values in the request that produced this
    primary: str  # the store key this entry is a variant of
    url_key: str
    path: str  # raw request path, for purge by prefix
    tags: tuple[str, ...]
    size: int
    # Encoded (or decoded) forms for clients, made on first request: variant key ->
    # (headers, body). A hit never compresses twice.
    variants: dict[str, tuple[CIMultiDictProxy[str], bytes]] = field(default_factory=dict)
    # What hits through one route share, ready to send (proxy/prepared.py): made on the
    # first hit, never copied (a refreshed entry starts without one).
    plan: Any = None

    @classmethod
    def build(
        cls,
        *,
        status: int,
        reason: str,
        headers: CIMultiDict[str],
        body: bytes,
        request_headers: policy.Headers,
        request_time: float,
        response_time: float,
        rules: CacheRules,
        primary: str,
        url_key: str,
        path: str,
        tags_header: str | None,
        handled_vary: frozenset[str] = frozenset(),
    ) -> Entry:
        # Fields we produce variants for ourselves (accept-encoding, when compressing)
        # must not split entries: one stored response serves every client's coding.
        vary = tuple(f for f in policy.vary_fields(headers) or () if f not in handled_vary)
        tags: tuple[str, ...] = ()
        if tags_header:
            tags = tuple(
                dict.fromkeys(t for v in headers.getall(tags_header, ()) for t in v.split())
            )
        return cls(
            status=status,
            reason=reason,
            headers=CIMultiDictProxy(headers),
            body=body,
            request_time=request_time,
            response_time=response_time,
            initial_age=policy.initial_age(headers, request_time, response_time),
            lifetime=policy.freshness_lifetime(headers, rules, response_time, status=status),
            cc=policy.effective_cache_control(headers),
            vary=vary,
            vary_values=policy.vary_key(vary, request_headers),
            primary=primary,
            url_key=url_key,
            path=path,
            tags=tags,
            size=entry_size(headers, body, primary, url_key),
        )

    def age(self, now: float) -> float:
        return policy.current_age(self.initial_age, self.response_time, now)

    def matches(self, request_headers: policy.Headers) -> bool:
        """§4.1: does this variant answer a request with these headers?"""
        return not self.vary or policy.vary_key(self.vary, request_headers) == self.vary_values

    def refreshed(
        self,
        not_modified_headers: policy.Headers,
        request_time: float,
        response_time: float,
        rules: CacheRules,
    ) -> Entry:
        """§4.3.4: a 304 from upstream freshens this entry with its headers."""
        merged = policy.merge_304_headers(self.headers, not_modified_headers)
        return Entry(
            status=self.status,
            reason=self.reason,
            headers=CIMultiDictProxy(merged),
            body=self.body,
            request_time=request_time,
            response_time=response_time,
            initial_age=policy.initial_age(merged, request_time, response_time),
            lifetime=policy.freshness_lifetime(merged, rules, response_time, status=self.status),
            cc=policy.effective_cache_control(merged),
            vary=self.vary,
            vary_values=self.vary_values,
            primary=self.primary,
            url_key=self.url_key,
            path=self.path,
            tags=self.tags,
            size=entry_size(merged, self.body, self.primary, self.url_key),
        )


def entry_size(headers: policy.Headers, body: bytes, primary: str, url_key: str) -> int:
    """Bytes an entry holds, overheads included (see ENTRY_OVERHEAD)."""
    return ENTRY_OVERHEAD + len(body) + len(url_key) + len(primary) + headers_size(headers)


def headers_size(headers: policy.Headers) -> int:
    """Bytes a stored header block holds, overheads included."""
    return sum(len(k) + len(v) + HEADER_OVERHEAD for k, v in headers.items())
