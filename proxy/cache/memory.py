"""MemoryStore: stored entries, least-recently-used first out, bounded by bytes.

One primary key (URL + configured key headers + user scope) holds one entry per Vary
variant. Side indexes (by URL and by tag) make invalidation and purge cheap.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from multidict import CIMultiDictProxy

from proxy.cache.entry import Entry, variant_size
from proxy.cache.policy import CacheControl, Headers, vary_key

_PURGES_REMEMBERED = 10_000  # URL purges tracked for in-flight fetches; older ones count as bulk
_SEP = "\x1f"  # between the primary key and a variant's Vary values


def variant_key(primary: str, vary_values: tuple[str, ...]) -> str:
    return primary + _SEP + _SEP.join(vary_values) if vary_values else primary


class StoreUnavailable(Exception):
    """A shared store did not respond in time; the caller carries on without it."""


@dataclass
class StoreStats:
    hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    purged: int = 0
    soft_purged: int = 0  # entries a soft purge made stale (kept)
    entries: int = 0
    bytes: int = 0
    max_bytes: int = 0


class MemoryStore:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        # Indexes that cost nothing per entry in the common case (no Vary, one primary key
        # per URL, the key being the URL key): a dict slot is ~40 bytes per entry, an object
        # more work for the garbage collector. A primary key that does not vary is its own
        # store key; for those that do:
        # primary -> the Vary of its newest response (field names: an untracked tuple),
        self._vary: dict[str, tuple[str, ...]] = {}
        # primary -> its variant keys;
        self._variants: dict[str, set[str]] = {}
        # url_key -> its primary keys other than itself, one or a set (key headers,
        # per-user scopes).
        self._by_url: dict[str, str | set[str]] = {}
        self._by_tag: dict[str, set[str]] = {}
        self.stats = StoreStats(max_bytes=max_bytes)
        # Purge generations: a response fetched before a purge of its URL must not be
        # stored after it (it may predate the change that caused the purge).
        self.generation = 0
        self._purged: OrderedDict[str, int] = OrderedDict()  # url_key -> generation
        self._bulk_purge = 0  # generation of the last prefix/tag/clear purge
        self._forgotten = 0  # newest generation dropped from _purged
        # Soft-purged entries in their grace (policy.soft_purge_grace), by store key, until
        # their revalidation ends: at most a slot per entry, and none in the common case.
        self._grace: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, primary: str, request_headers: Headers) -> Entry | None:
        entry = self._entries.get(primary)
        # (Entries are checked: a primary key could be spelt like another's variant key.)
        if entry is not None and entry.primary == primary:
            self._entries.move_to_end(primary)
            self.stats.hits += 1
            return entry
        vary = self._vary.get(primary)
        if vary is not None:
            key = variant_key(primary, vary_key(vary, request_headers))
            entry = self._entries.get(key)
            if entry is not None and entry.primary == primary:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return entry
        self.stats.misses += 1
        return None

    def peek(self, primary: str, request_headers: Headers) -> Entry | None:
        """Like `get`, but neither counted nor made recent: for warming, which is no reader."""
        entry = self._entries.get(primary)
        if entry is None or entry.primary != primary:
            vary = self._vary.get(primary)
            if vary is None:
                return None
            entry = self._entries.get(variant_key(primary, vary_key(vary, request_headers)))
        return entry if entry is not None and entry.primary == primary else None

    def used(self, entry: Entry, key: str | None = None) -> bool:
        """`entry`, found by `peek`, served: counted as a hit and made recent. False: it is
        not stored any more (replaced, purged or evicted since), and nothing was done.
        `key`: its store key (`store_key`), when the caller kept it."""
        if key is None:
            key = variant_key(entry.primary, entry.vary_values)  # store_key, asked on every hit
        if self._entries.get(key) is entry:
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return True
        return False

    @staticmethod
    def store_key(entry: Entry) -> str:
        """The key `entry` is stored under."""
        return variant_key(entry.primary, entry.vary_values)

    def discard(self, entry: Entry) -> None:
        """Remove `entry` if it is still the one stored (parts a complete entry replaced)."""
        key = self.store_key(entry)
        if self._entries.get(key) is entry:
            self._remove(key)

    def put(self, entry: Entry, fetched_at: int | None = None, grace: bool = False) -> bool:
        """Store (or replace) the entry; False when it cannot fit, or when its URL was
        purged after generation `fetched_at` (when the fetch for it began). `grace`: it was
        soft-purged elsewhere (in Redis) and earned the grace there (Entry.soft_purged)."""
        size = entry.size  # a sum of the entry's parts: taken once
        if size > self.max_bytes:
            return False
        if fetched_at is not None and self.purged_since(entry.url_key, fetched_at):
            return False
        primary, extras = entry.primary, entry.extras
        vary: tuple[str, ...]
        tags: tuple[str, ...]
        # Most entries have no extras (no Vary, no tags): their store key is their primary.
        if extras is None:
            vary, key, tags = (), primary, ()
        else:
            vary, key, tags = extras.vary, variant_key(primary, extras.vary_values), extras.tags
        if key in self._entries:
            self._remove(key)
        known = self._vary.get(primary)
        if known is None and primary in self._entries:
            known = ()  # stored under its own key: it does not vary
        if known is not None and known != vary:
            # The origin changed what it varies on: older variants can no longer be found.
            for old in list(self._variant_keys(primary)):
                self._remove(old)
        if vary:
            self._vary[primary] = vary
            self._variants.setdefault(primary, set()).add(key)
        self._entries[key] = entry
        if primary != entry.url_key:
            self._index_url(entry.url_key, primary)
        for tag in tags:
            self._by_tag.setdefault(tag, set()).add(key)
        self.bytes += size
        self.stats.stores += 1
        if grace:
            self._grace[key] = entry
        if self.bytes > self.max_bytes:
            self._evict()
        return True

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self._entries:
            self._remove(next(iter(self._entries)))
            self.stats.evictions += 1

    def add_variant(
        self, entry: Entry, key: str, variant: tuple[CIMultiDictProxy[str], bytes]
    ) -> None:
        """Keep an encoded form with its entry, counted against the same budget."""
        if not isinstance(entry.variants, dict):
            entry.variants = {}  # the first: until now the shared empty mapping
        entry.variants[key] = variant
        headers, body = variant
        extra = variant_size(headers)
        if body is not entry.body:
            extra += len(body)
        self.grew(entry, extra)

    def grew(self, entry: Entry, extra: int) -> None:
        """Count `extra` bytes more for `entry` (a variant, a prepared head); fewer when
        negative (prepared heads it dropped)."""
        entry.grown += extra
        if self._entries.get(self.store_key(entry)) is entry:
            self.bytes += extra
            self._evict()

    def replace(self, old: Entry, new: Entry, fetched_at: int) -> None:
        """Swap in a revalidated entry, if `old` is still the one stored and no purge came
        since generation `fetched_at` (when the revalidation began): a 304 sent before a
        purge must not make fresh again what the purge made stale."""
        if self._entries.get(variant_key(old.primary, old.vary_values)) is old:
            self.put(new, fetched_at)

    def _variant_keys(self, primary: str) -> Iterable[str]:
        variants = self._variants.get(primary)
        if variants is not None:
            return variants
        return (primary,) if primary in self._entries else ()

    def _index_url(self, url_key: str, primary: str) -> None:
        known = self._by_url.get(url_key)
        if known is None:
            self._by_url[url_key] = primary
        elif isinstance(known, set):
            known.add(primary)
        elif known != primary:
            self._by_url[url_key] = {known, primary}

    def _unindex_url(self, url_key: str, primary: str) -> None:
        known = self._by_url.get(url_key)
        if isinstance(known, set):
            known.discard(primary)
            if len(known) == 1:
                self._by_url[url_key] = known.pop()
        elif known == primary:
            del self._by_url[url_key]

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size
        if self._grace:
            self._grace.pop(key, None)
        primary = entry.primary
        last = True  # of its primary (one that does not vary holds just this one entry)
        variants = self._variants.get(primary)
        if variants is not None:
            variants.discard(key)
            last = not variants
            if last:
                del self._variants[primary]
                del self._vary[primary]
        if last and primary != entry.url_key:
            self._unindex_url(entry.url_key, primary)
        for tag in entry.tags:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]

    def _purge(self, keys: Iterable[str], soft_at: float | None) -> int:
        return self._remove_all(keys) if soft_at is None else self._mark_stale(keys, soft_at)

    def _mark_stale(self, keys: Iterable[str], at: float) -> int:
        """A soft purge at `at`: each entry kept, made stale (Entry.soft_purged)."""
        marked = 0
        for key in list(keys):
            entry = self._entries.get(key)
            if entry is None:
                continue
            marked += 1
            if entry.soft_purged(at):
                self._grace[key] = entry
        self.stats.soft_purged += marked
        return marked

    def in_grace(self, entry: Entry) -> bool:
        """Soft-purged, and its grace not yet over (`end_grace`)."""
        grace = self._grace
        return bool(grace) and grace.get(self.store_key(entry)) is entry

    def end_grace(self, entry: Entry) -> None:
        """Its revalidation ended (whatever came of it): from now on it is merely stale."""
        key = self.store_key(entry)
        if self._grace.get(key) is entry:
            del self._grace[key]

    def _remove_all(self, keys: Iterable[str]) -> int:
        removed = 0
        for key in list(keys):
            if key in self._entries:
                self._remove(key)
                removed += 1
        self.stats.purged += removed
        return removed

    def purged_since(self, url_key: str, generation: int) -> bool:
        if self._bulk_purge > generation or self._forgotten > generation:
            return True
        return self._purged.get(url_key, 0) > generation

    def _next_generation(self, url_key: str | None = None) -> None:
        self.generation += 1
        if url_key is None:
            self._bulk_purge = self.generation
            return
        self._purged[url_key] = self.generation
        self._purged.move_to_end(url_key)
        if len(self._purged) > _PURGES_REMEMBERED:
            _, self._forgotten = self._purged.popitem(last=False)

    # A purge removes its entries; a soft one (`soft_at`: when, in epoch seconds) keeps them,
    # stale from then on (Entry.soft_purged). Either way a fetch begun before it is not
    # stored after it. Each returns how many entries it removed or made stale.

    def purge_url(self, url_key: str, soft_at: float | None = None) -> int:
        """Every variant of one URL: all users, all key headers, all Vary values."""
        self._next_generation(url_key)
        known = self._by_url.get(url_key, ())
        primaries = (url_key, *((known,) if isinstance(known, str) else known))
        keys = [k for p in primaries for k in self._variant_keys(p)]
        return self._purge(keys, soft_at)

    def purge_prefix(self, path_prefix: str, soft_at: float | None = None) -> int:
        self._next_generation()
        return self._purge(
            (k for k, e in self._entries.items() if e.path.startswith(path_prefix)), soft_at
        )

    def purge_tag(self, tag: str, soft_at: float | None = None) -> int:
        self._next_generation()
        return self._purge(self._by_tag.get(tag, ()), soft_at)

    def clear(self) -> int:
        self._next_generation()
        return self._remove_all(self._entries.keys())

    def mark_all(self) -> int:
        """Every entry must be revalidated with the origin before it is reused: for
        when purges may have been missed. Kept, unlike `clear`, so that each key goes
        upstream when it is next asked for (spread over time by traffic), as a conditional
        request that a 304 revalidates cheaply. The mark is `no-cache` on the entry's own
        directives, which a hit already tests and a revalidation replaces, so the hit path
        pays nothing for it; a fetch begun before the mark is not stored after it."""
        self._next_generation()
        self._grace.clear()  # no-cache: never served stale, grace or not
        marked: dict[int, CacheControl] = {}  # entries of one route mostly share one cc
        for entry in self._entries.values():
            cc = entry.cc
            if not cc.no_cache:
                entry.cc = marked.get(id(cc)) or marked.setdefault(
                    id(cc), dataclasses.replace(cc, no_cache=True)
                )
        return len(self._entries)

    def snapshot(self) -> StoreStats:
        self.stats.entries = len(self._entries)
        self.stats.bytes = self.bytes
        return self.stats
