"""A stored response: everything a hit needs, computed once when it is stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache import policy
from proxy.cache.parts import Parts
from proxy.cache.policy import CacheControl, CacheRules, Governed
from proxy.cache.tags import NO_TAGS, TagFields

# What one entry costs beyond the characters of its head, body and keys (the Entry, its
# three floats, its string and bytes objects, its slot in the store), so that max_memory
# bounds real memory: measured with tracemalloc over 100,000 entries, as are the rest.
ENTRY_OVERHEAD = 390
KEY_OVERHEAD = 90  # a primary key that is not the URL key: its string, its URL index slot
EXTRAS_OVERHEAD = 100  # an `EntryExtras` and its tuples
VARY_OVERHEAD = 460  # a variant: its store key, its slots in the store's Vary indexes
# A tag's string and slot in the tag index: ~100 bytes for a tag many entries share, ~320
# for one of its own (a set per tag).
TAG_OVERHEAD = 200
HEADER_OVERHEAD = 2  # a packed field's ":" and "\n" (see pack_headers)
# An encoded variant's own header multidict (fields as separate strings), its proxy, its
# tuple and its slot in `variants`: measured like ENTRY_OVERHEAD, for ~8 fields.
VARIANT_OVERHEAD = 1200

NO_VARIANTS: Mapping[str, tuple[CIMultiDictProxy[str], bytes]] = MappingProxyType({})
# The reason phrases upstreams send, one string each: every parsed "OK" is a new string.
_REASONS = {s.phrase: s.phrase for s in HTTPStatus}


@dataclass(frozen=True, slots=True)
class EntryExtras:
    """What most entries lack, behind one slot that is None for them (each slot is 8
    bytes per entry): Vary, tags, a path that cannot be read from the URL key, and the
    parts of a partial entry."""

    vary: tuple[str, ...] = ()  # request header names the origin varies on
    vary_values: tuple[str, ...] = ()  # their values in the request that produced this
    tags: tuple[str, ...] = ()
    path: str | None = None  # None: the path part of the URL key (see url_path)
    # The bytes of a 206 entry (stored under parts.parts_key, never served as it is);
    # its `body` is empty.
    parts: Parts | None = None

    @staticmethod
    def of(
        vary: tuple[str, ...],
        vary_values: tuple[str, ...],
        tags: tuple[str, ...],
        path: str,
        url_key: str,
        parts: Parts | None = None,
    ) -> EntryExtras | None:
        own = None if path == url_path(url_key) else path
        if vary or vary_values or tags or own is not None or parts is not None:
            return EntryExtras(vary, vary_values, tags, own, parts)
        return None

    def size(self) -> int:
        """Bytes it and the index slots it causes hold (see ENTRY_OVERHEAD)."""
        strings = (*self.vary, *self.vary_values, *self.tags, self.path or "")
        size = EXTRAS_OVERHEAD + TAG_OVERHEAD * len(self.tags) + sum(len(s) for s in strings)
        if self.parts is not None:
            size += self.parts.size()
        return size + VARY_OVERHEAD if self.vary else size


# Weakly referable: a replay (pipeline/handler.py) must not keep an entry the store let go.
@dataclass(slots=True, weakref_slot=True)
class Entry:
    status: int
    reason: str
    # The headers as forwarded to clients (hop-by-hop already gone), packed into one string
    # (`headers` unpacks them): a multidict per entry cost 0.5 KB and two objects for the
    # garbage collector to walk, and hits are written from prepared heads (prepared.py).
    head: str
    body: bytes
    # Hits read these three (CacheStage._freshness in proxy/pipeline/cache_stage/stage.py).
    # No request time: it only counts towards initial_age, once.
    response_time: float
    initial_age: float
    lifetime: float
    cc: CacheControl
    primary: str  # the store key this entry is a variant of
    url_key: str
    # See EntryExtras; `vary`, `vary_values`, `tags` and `path` read it.
    extras: EntryExtras | None = None
    # Bytes counted since it was made (encoded variants, prepared heads): the rest of
    # `size` follows from the fields, so most entries hold no int of their own.
    grown: int = 0
    # Encoded (or decoded) forms for clients, made on first request: variant key ->
    # (headers, body). A hit never compresses twice.
    # Until the first one is made, one shared empty mapping: an empty dict per entry is 64
    # bytes that most entries never use (MemoryStore.add_variant makes the dict).
    variants: Mapping[str, tuple[CIMultiDictProxy[str], bytes]] = field(
        default_factory=lambda: NO_VARIANTS
    )
    # What hits through one route share, ready to send (proxy/respond/prepared.py's
    # PreparedForms): made on the first hit, never copied (a refreshed entry starts without).
    prepared: Any = None

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
        tag_fields: TagFields = NO_TAGS,
        handled_vary: frozenset[str] = frozenset(),
        parts: Parts | None = None,
        governed: Governed | None = None,
    ) -> Entry:
        """`governed`: policy.governing(headers), when the caller has it (storability
        asked it too)."""
        if governed is None:
            governed = policy.governing(headers)
        # Fields we produce variants for ourselves (accept-encoding, when compressing)
        # must not split entries: one stored response serves every client's coding.
        # (Most responses vary on nothing: then neither a generator nor a key is made.)
        fields = policy.vary_fields(headers)
        vary = tuple(f for f in fields if f not in handled_vary) if fields else ()
        tags = tag_fields.tags(headers)
        # Positional, in the fields' order: keywords cost a dataclass's __init__ twice as
        # much (each name matched against the fields'), on every response stored.
        return cls(
            status,
            reason,
            pack_headers(headers),  # head
            body,
            response_time,
            policy.initial_age(headers, request_time, response_time),
            policy.freshness_lifetime(
                headers, rules, response_time, status=status, governed=governed
            ),  # lifetime
            governed[0],  # cc
            primary,
            url_key,
            EntryExtras.of(
                vary,
                policy.vary_key(vary, request_headers) if vary else (),
                tags,
                path,
                url_key,
                parts,
            ),
        )

    def __post_init__(self) -> None:
        # One string, not two equal ones (no key headers, no user scope), however the entry
        # was made: built, refreshed or decoded from a shared store. Likewise the reason.
        if self.primary == self.url_key:
            self.primary = self.url_key
        self.reason = _REASONS.get(self.reason, self.reason)

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return CIMultiDictProxy(unpack_headers(self.head))

    @property
    def vary(self) -> tuple[str, ...]:
        return () if self.extras is None else self.extras.vary

    @property
    def vary_values(self) -> tuple[str, ...]:
        return () if self.extras is None else self.extras.vary_values

    @property
    def tags(self) -> tuple[str, ...]:
        return () if self.extras is None else self.extras.tags

    @property
    def parts(self) -> Parts | None:
        """The stored parts of a partial entry; None for a complete one."""
        return None if self.extras is None else self.extras.parts

    @property
    def path(self) -> str:
        """The raw request path, for purge by prefix."""
        if self.extras is None or self.extras.path is None:
            return url_path(self.url_key)
        return self.extras.path

    @property
    def size(self) -> int:
        """Bytes this entry holds, overheads included (see ENTRY_OVERHEAD)."""
        keys = len(self.url_key)
        if self.primary is not self.url_key:
            keys += KEY_OVERHEAD + len(self.primary)
        size = ENTRY_OVERHEAD + len(self.head) + len(self.body) + keys + self.grown
        return size if self.extras is None else size + self.extras.size()

    def age(self, now: float) -> float:
        return policy.current_age(self.initial_age, self.response_time, now)

    def soft_purged(self, at: float) -> bool:
        """A soft purge at `at` (epoch seconds): its freshness ends then. True when it earns
        the grace of being served stale while its first revalidation runs
        (policy.soft_purge_grace). Changed in place, as the one copy everyone reads: a
        lookup reads the lifetime anew each time, and a revalidation makes a new entry."""
        age = self.age(at)
        grace = policy.soft_purge_grace(age, self.lifetime, self.cc, self.headers)
        self.lifetime = min(self.lifetime, age)
        return grace

    def matches(self, request_headers: policy.Headers) -> bool:
        """§4.1: may this variant be reused for a request with these headers?"""
        vary = self.vary
        return not vary or policy.vary_key(vary, request_headers) == self.vary_values

    def refreshed(
        self,
        not_modified_headers: policy.Headers,
        request_time: float,
        response_time: float,
        rules: CacheRules,
    ) -> Entry:
        """§4.3.4: a 304 from upstream freshens this entry with its headers."""
        merged = policy.merge_304_headers(self.headers, not_modified_headers)
        governed = policy.governing(merged)
        return Entry(
            status=self.status,
            reason=self.reason,
            head=pack_headers(merged),
            body=self.body,
            response_time=response_time,
            initial_age=policy.initial_age(merged, request_time, response_time),
            lifetime=policy.freshness_lifetime(
                merged, rules, response_time, status=self.status, governed=governed
            ),
            cc=governed[0],
            primary=self.primary,
            url_key=self.url_key,
            extras=self.extras,
        )


def url_path(url_key: str) -> str:
    """The path in a URL key (keys.KeyBuilder.url_key: ``host+path?query``): hosts hold no
    "/", paths no "?". Entries whose path differs (escaped, empty) keep their own."""
    start = url_key.find("/")
    if start < 0:
        return ""
    end = url_key.find("?", start)
    return url_key[start:end] if end >= 0 else url_key[start:]


def pack_headers(headers: policy.Headers) -> str:
    """`name:value` lines; neither a name (a token) nor a parsed value holds a line feed, and
    no name holds a colon."""
    # Joined, not formatted: multidict's names are `istr`s, which an f-string copies slowly
    # (half the cost of storing a response's head).
    return "\n".join(map(":".join, headers.items()))


def unpack_headers(head: str) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    if head:
        for line in head.split("\n"):
            name, _, value = line.partition(":")
            out.add(name, value)
    return out


def variant_size(headers: policy.Headers) -> int:
    """Bytes an encoded variant adds beyond its body (which may be the entry's own)."""
    return VARIANT_OVERHEAD + sum(len(k) + len(v) + HEADER_OVERHEAD for k, v in headers.items())
