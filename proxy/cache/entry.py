"""A stored response: everything a hit needs, computed once when it is stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache import policy
from proxy.cache.policy import CacheControl, CacheRules

# What one entry costs beyond its bytes (the object, headers, index slots): measured
# with tracemalloc over 100,000 small entries; counted so max_memory bounds real memory.
ENTRY_OVERHEAD = 600
HEADER_OVERHEAD = 2  # a packed field's ":" and "\n" (see pack_headers)
# An encoded variant's own header multidict (fields as separate strings), its proxy, its
# tuple and its slot in `variants`: measured like ENTRY_OVERHEAD, for ~8 fields.
VARIANT_OVERHEAD = 1200

NO_VARIANTS: Mapping[str, tuple[CIMultiDictProxy[str], bytes]] = MappingProxyType({})


@dataclass(slots=True)
class Entry:
    status: int
    reason: str
    # The headers as forwarded to clients (hop-by-hop already gone), packed into one string
    # (`headers` unpacks them): a multidict per entry cost 0.5 KB and two objects for the
    # garbage collector to walk, and hits are written from prepared heads (prepared.py).
    head: str
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
    # Until the first one is made, one shared empty mapping: an empty dict per entry is 64
    # bytes that most entries never use (MemoryStore.add_variant makes the dict).
    variants: Mapping[str, tuple[CIMultiDictProxy[str], bytes]] = field(
        default_factory=lambda: NO_VARIANTS
    )
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
            head=pack_headers(headers),
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

    def __post_init__(self) -> None:
        # One string, not two equal ones (no key headers, no user scope), however the entry
        # was made: built, refreshed or decoded from a shared store.
        if self.primary == self.url_key:
            self.primary = self.url_key

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return CIMultiDictProxy(unpack_headers(self.head))

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
            head=pack_headers(merged),
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


def pack_headers(headers: policy.Headers) -> str:
    """`name:value` lines; neither a name (a token) nor a parsed value holds a line feed, and
    no name holds a colon."""
    return "\n".join(f"{name}:{value}" for name, value in headers.items())


def unpack_headers(head: str) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    if head:
        for line in head.split("\n"):
            name, _, value = line.partition(":")
            out.add(name, value)
    return out


def entry_size(headers: policy.Headers, body: bytes, primary: str, url_key: str) -> int:
    """Bytes an entry holds, overheads included (see ENTRY_OVERHEAD)."""
    return ENTRY_OVERHEAD + len(body) + len(url_key) + len(primary) + headers_size(headers)


def variant_size(headers: policy.Headers) -> int:
    """Bytes an encoded variant adds beyond its body (which may be the entry's own)."""
    return VARIANT_OVERHEAD + headers_size(headers)


def headers_size(headers: policy.Headers) -> int:
    """Bytes a stored header block holds, overheads included."""
    return sum(len(k) + len(v) + HEADER_OVERHEAD for k, v in headers.items())
