"""MemoryStore: LRU by bytes, Vary variants, purge indexes, and the real memory it takes."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest
from multidict import CIMultiDict

from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryStore
from proxy.cache.parts import SPAN_OVERHEAD, Parts, parts_key
from proxy.cache.policy import CacheRules
from proxy.cache.tags import TagFields

RULES = CacheRules(ttl=60)


def entry(
    path: str,
    body: bytes = b"x" * 100,
    *,
    user: str = "",
    vary: str | None = None,
    lang: str | None = None,
    tags: str = "",
    etag: str | None = None,
    cache_control: str = "max-age=60",
    parts: Parts | None = None,
) -> Entry:
    headers = CIMultiDict({"Content-Type": "application/json", "Cache-Control": cache_control})
    if etag:
        headers["ETag"] = etag
    if vary:
        headers["Vary"] = vary
    if tags:
        headers["Surrogate-Key"] = tags
    request_headers = CIMultiDict({"Accept-Language": lang} if lang else {})
    url_key = f"api{path}?"
    primary = url_key + (f"|u:{user}" if user else "")
    return Entry.build(
        status=200 if parts is None else 206,
        reason="OK",
        headers=headers,
        body=body if parts is None else b"",
        request_headers=request_headers,
        request_time=1000.0,
        response_time=1000.0,
        rules=RULES,
        primary=primary if parts is None else parts_key(primary),
        url_key=url_key,
        path=path,
        tag_fields=TagFields.named(["Surrogate-Key"]),
        parts=parts,
    )


NO_HEADERS: CIMultiDict[str] = CIMultiDict()


def test_lru_eviction_keeps_bytes_under_the_bound() -> None:
    one = entry("/0")
    store = MemoryStore(max_bytes=one.size * 3)
    for i in range(3):
        assert store.put(entry(f"/{i}"))
    assert store.get(one.primary, NO_HEADERS) is not None  # /0 is now most recent
    store.put(entry("/3"))
    assert store.bytes <= store.max_bytes
    assert store.get("api/1?", NO_HEADERS) is None  # least recently used went first
    assert store.get("api/0?", NO_HEADERS) is not None
    assert store.snapshot().evictions == 1


def test_an_entry_larger_than_the_whole_budget_is_refused() -> None:
    store = MemoryStore(max_bytes=1000)
    assert not store.put(entry("/big", b"x" * 2000))
    assert len(store) == 0 and store.bytes == 0


def test_replacing_an_entry_does_not_leak_bytes() -> None:
    store = MemoryStore(max_bytes=10**6)
    first = entry("/a")
    store.put(first)
    store.put(entry("/a"))
    assert len(store) == 1 and store.bytes == first.size


def test_vary_variants_and_a_change_of_vary() -> None:
    store = MemoryStore(max_bytes=10**6)
    store.put(entry("/v", b"en", vary="Accept-Language", lang="en"))
    store.put(entry("/v", b"de", vary="Accept-Language", lang="de"))
    en = store.get("api/v?", CIMultiDict({"Accept-Language": "en"}))
    de = store.get("api/v?", CIMultiDict({"Accept-Language": "de"}))
    assert en is not None and en.body == b"en"
    assert de is not None and de.body == b"de"
    assert store.get("api/v?", CIMultiDict({"Accept-Language": "fr"})) is None
    # The origin stops varying: the old variants cannot be selected any more.
    store.put(entry("/v", b"all"))
    assert len(store) == 1
    hit = store.get("api/v?", CIMultiDict({"Accept-Language": "en"}))
    assert hit is not None and hit.body == b"all"


def test_purges_and_indexes_stay_consistent() -> None:
    store = MemoryStore(max_bytes=10**6)
    store.put(entry("/api/x", user="a", tags="t1 shared"))
    store.put(entry("/api/x", user="b", tags="t2 shared"))
    store.put(entry("/api/y", tags="shared"))
    store.put(entry("/other", tags="t3"))
    assert store.purge_url("api/api/x?") == 2
    assert store.purge_tag("shared") == 1
    assert store.purge_prefix("/oth") == 1
    assert len(store) == 0 and store.bytes == 0
    assert not store._by_url and not store._by_tag and not store._vary and not store._variants


def test_eviction_cleans_indexes() -> None:
    # Per-user entries that vary: the kinds every index holds a slot for.
    def indexed(path: str, tags: str) -> Entry:
        return entry(path, tags=tags, user="u", vary="Accept-Language", lang="en")

    store = MemoryStore(max_bytes=indexed("/0", tags="a b").size * 10)
    for i in range(1000):
        store.put(indexed(f"/{i}", tags=f"t{i} all"))
    n = len(store)
    assert 9 <= n <= 10 and store.bytes <= store.max_bytes
    assert len(store._by_url) == n and len(store._vary) == n and len(store._variants) == n
    assert len(store._by_tag) == n + 1 and len(store._by_tag["all"]) == n


def test_plain_entries_take_no_index_slots_and_are_still_found_and_purged() -> None:
    # No Vary, no key headers, no user scope: the store key is the URL key, and an index
    # slot per entry (~40 bytes each at 100k entries) would only repeat it.
    store = MemoryStore(max_bytes=10**6)
    for i in range(10):
        store.put(entry(f"/p/{i}"))
    assert not store._by_url and not store._vary and not store._variants
    assert store.get("api/p/3?", NO_HEADERS) is not None
    assert store.peek("api/p/4?", NO_HEADERS) is not None
    assert store.purge_url("api/p/3?") == 1 and store.get("api/p/3?", NO_HEADERS) is None
    assert store.purge_prefix("/p/") == 9 and len(store) == 0 and store.bytes == 0


def test_a_url_stored_plain_then_varying_then_plain_again() -> None:
    store = MemoryStore(max_bytes=10**6)
    store.put(entry("/s", b"plain"))
    store.put(entry("/s", b"en", vary="Accept-Language", lang="en"))
    assert len(store) == 1  # the plain one can no longer be selected
    hit = store.get("api/s?", CIMultiDict({"Accept-Language": "en"}))
    assert hit is not None and hit.body == b"en"
    assert store.get("api/s?", CIMultiDict({"Accept-Language": "de"})) is None
    store.put(entry("/s", b"again"))
    assert len(store) == 1 and not store._vary and not store._variants
    hit = store.get("api/s?", CIMultiDict({"Accept-Language": "en"}))
    assert hit is not None and hit.body == b"again"
    assert store.purge_url("api/s?") == 1 and store.bytes == 0


def test_an_entry_is_only_served_for_its_own_primary_key() -> None:
    # A primary key spelt like another's variant key (primary, separator, Vary values).
    store = MemoryStore(max_bytes=10**6)
    store.put(entry("/c", b"en", vary="Accept-Language", lang="en"))
    assert store.get("api/c?\x1fen", NO_HEADERS) is None
    assert store.peek("api/c?\x1fen", NO_HEADERS) is None


def test_a_stored_entry_is_one_object_for_the_garbage_collector() -> None:
    # A full collection walks every tracked object: with a million entries, each extra
    # object per entry (a multidict, an index set) is a million more on every walk.
    store = MemoryStore(max_bytes=10**9)
    store.put(entry("/first"))  # one-off allocations are not per entry
    gc.collect()
    before = len(gc.get_objects())
    for i in range(2000):
        store.put(entry(f"/k/{i}", b"%d" % i))
    gc.collect()
    assert (len(gc.get_objects()) - before) / 2000 <= 1.01


def test_primary_keys_of_one_url_are_indexed_until_the_last_goes() -> None:
    store = MemoryStore(max_bytes=10**6)
    store.put(entry("/api/x", user="a"))
    assert store._by_url["api/api/x?"] == "api/api/x?|u:a"  # one key: no set
    store.put(entry("/api/x", user="b"))
    store.put(entry("/api/x", user="c"))
    assert store._by_url["api/api/x?"] == {"api/api/x?|u:a", "api/api/x?|u:b", "api/api/x?|u:c"}
    store._remove("api/api/x?|u:a")
    store._remove("api/api/x?|u:c")
    assert store._by_url["api/api/x?"] == "api/api/x?|u:b"
    assert store.purge_url("api/api/x?") == 1 and not store._by_url


def test_100k_keys_stay_within_the_bound_plus_measured_overhead() -> None:
    budget = 16 * 2**20
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        store = MemoryStore(max_bytes=budget)
        for i in range(100_000):
            store.put(entry(f"/k/{i}", b"x" * 1024, tags=f"t{i % 100}"))
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert store.bytes <= budget
    assert store.snapshot().evictions > 80_000  # the workload offered ~8x the budget
    # Counted bytes track real allocations: what is held stays near the configured budget.
    assert used < budget * 1.15, (
        f"{used / 2**20:.1f} MiB held for a {budget / 2**20:.0f} MiB budget"
    )


def test_a_fetch_that_began_before_a_purge_of_its_url_is_not_stored() -> None:
    store = MemoryStore(max_bytes=10**6)
    began = store.generation
    store.purge_url("api/a?")  # e.g. a PUT to /a succeeded while the GET was in flight
    assert not store.put(entry("/a"), fetched_at=began)
    assert store.put(entry("/b"), fetched_at=began)  # other URLs are unaffected
    assert store.put(entry("/a"), fetched_at=store.generation)  # a fetch begun after: fine


def test_marking_all_keeps_every_entry_but_makes_each_revalidate() -> None:
    store = MemoryStore(1 << 20)
    a, b = entry("/a"), entry("/b", lang="de", vary="Accept-Language")
    store.put(a)
    store.put(b)
    generation = store.generation
    assert store.mark_all() == 2
    assert len(store) == 2 and store.bytes == a.size + b.size
    assert a.cc.no_cache and b.cc.no_cache  # a hit must revalidate (RFC 9111 §5.2.2.4)...
    assert a.cc.max_age == 60  # ...and nothing else changes
    # A fetch that began before the mark is not stored after it.
    assert store.purged_since("api/a?", generation)
    assert not store.put(entry("/a"), fetched_at=generation)


def test_bulk_purges_and_forgotten_url_purges_are_conservative() -> None:
    store = MemoryStore(max_bytes=10**6)
    began = store.generation
    store.purge_tag("anything")
    assert not store.put(entry("/b"), fetched_at=began)
    began = store.generation
    for i in range(10_001):  # more URL purges than are remembered one by one
        store.purge_url(f"api/x{i}?")
    assert not store.put(entry("/b"), fetched_at=began)
    assert store.put(entry("/b"), fetched_at=store.generation)


def numbered(kind: dict[str, str], i: int) -> dict[str, Any]:
    """`entry`'s keywords for the i-th entry of a kind."""
    return {k: v.format(i=i) for k, v in kind.items()}


@pytest.mark.parametrize(
    "kind, within",
    [
        ({}, 0.05),
        ({"user": "u"}, 0.05),
        ({"vary": "Accept-Language", "lang": "en"}, 0.05),
        # A tag is counted between what one shared by many entries and one of its own cost.
        ({"tags": "shared"}, 0.1),
        ({"tags": "own-{i}"}, 0.1),
        ({"user": "u", "vary": "Accept-Language", "lang": "en", "tags": "own-{i} shared"}, 0.1),
    ],
    ids=["plain", "per-user", "vary", "shared-tag", "own-tag", "all"],
)
def test_counted_bytes_follow_real_bytes(kind: dict[str, str], within: float) -> None:
    # max_memory means real memory: neither much more (the bound would not hold) nor much
    # less (memory paid for would go unused) than what the entries really hold.
    n = 5_000
    store = MemoryStore(max_bytes=10**10)
    store.put(entry("/first", **numbered(kind, -1)))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        counted = store.bytes
        for i in range(n):
            body = (b"%d" % i).ljust(1024, b"x")
            store.put(entry(f"/k/{i}", body, **numbered(kind, i)))
        gc.collect()
        real = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    counted = store.bytes - counted
    assert abs(counted / real - 1) < within, (counted / n, real / n)


def test_a_soft_purge_keeps_its_entries_stale_from_that_moment() -> None:
    store = MemoryStore(1 << 20)
    a, b, other = entry("/a", etag='"1"'), entry("/b", etag='"2"', tags="t"), entry("/o")
    for e in (a, b, other):
        store.put(e)
    began = store.generation
    assert store.purge_url("api/a?", soft_at=1010.0) == 1
    assert store.purge_tag("t", soft_at=1020.0) == 1
    assert len(store) == 3 and store.bytes == a.size + b.size + other.size
    # Stale since the purge: its lifetime is the age it had then (RFC 9111 §4.2).
    assert (a.lifetime, b.lifetime, other.lifetime) == (10.0, 20.0, 60.0)
    assert store.in_grace(a) and store.in_grace(b) and not store.in_grace(other)
    assert store.snapshot().soft_purged == 2 and store.snapshot().purged == 0
    # As after any purge, a fetch that began before it is not stored after it.
    assert not store.put(entry("/a"), fetched_at=began)
    assert store.purge_prefix("/", soft_at=1030.0) == 3
    assert a.lifetime == 10.0  # already stale: a later soft purge changes nothing


def test_the_grace_is_for_fresh_entries_with_a_validator_that_may_be_served_stale() -> None:
    store = MemoryStore(1 << 20)
    entries = {
        "with-etag": entry("/e", etag='"1"'),
        "no-validator": entry("/n"),
        "must-revalidate": entry("/m", etag='"1"', cache_control="max-age=60, must-revalidate"),
        "stale": entry("/s", etag='"1"', cache_control="max-age=30"),
    }
    for e in entries.values():
        store.put(e)
    assert store.purge_prefix("/", soft_at=1040.0) == 4  # /s was stale by then
    assert {name for name, e in entries.items() if store.in_grace(e)} == {"with-etag"}
    assert [e.lifetime for e in entries.values()] == [40.0, 40.0, 40.0, 30.0]


def test_the_grace_ends_with_its_revalidation_or_its_entry() -> None:
    store = MemoryStore(1 << 20)
    a, b = entry("/a", etag='"1"'), entry("/b", etag='"1"', lang="de", vary="Accept-Language")
    store.put(a)
    store.put(b)
    store.purge_prefix("/", soft_at=1001.0)
    assert store.in_grace(a) and store.in_grace(b)
    store.end_grace(a)  # its revalidation failed: merely stale from now on
    assert not store.in_grace(a) and a.lifetime == 1.0
    generation = store.generation
    fresh = entry("/b", etag='"1"', lang="de", vary="Accept-Language")
    store.replace(b, fresh, generation)  # revalidated: the new entry has no grace
    assert store.peek(b.primary, CIMultiDict({"Accept-Language": "de"})) is fresh
    assert not store.in_grace(b) and not store.in_grace(fresh) and not store._grace
    store.put(entry("/c", etag='"1"'), grace=True)  # soft-purged in Redis, read from there
    assert len(store._grace) == 1
    store.mark_all()  # no-cache: never stale, so no grace either
    assert not store._grace


def test_a_revalidation_overtaken_by_a_purge_does_not_freshen_its_entry() -> None:
    store = MemoryStore(1 << 20)
    a = entry("/a", etag='"1"')
    store.put(a)
    began = store.generation  # the revalidation is sent...
    store.purge_url("api/a?", soft_at=1001.0)  # ...the origin changes, and is purged...
    store.replace(a, entry("/a", etag='"1"'), began)  # ...and the 304 from before arrives
    assert store.peek(a.primary, NO_HEADERS) is a and a.lifetime == 1.0


def test_parts_are_never_found_by_their_primary_key_and_go_with_every_purge() -> None:
    store = MemoryStore(100_000)
    part = Parts(1000).add(0, b"x" * 100)
    for kind, value in (("url", "api/p?"), ("prefix", "/p"), ("tag", "t")):
        parts = entry("/p", parts=part, tags="t")
        assert store.put(parts)
        assert store.get("api/p?", NO_HEADERS) is None
        assert store.peek(parts_key("api/p?"), NO_HEADERS) is parts
        assert getattr(store, f"purge_{kind}")(value) == 1
        assert store.peek(parts_key("api/p?"), NO_HEADERS) is None
        assert store.bytes == 0


def test_parts_count_their_bytes_and_go_when_discarded() -> None:
    store = MemoryStore(100_000)
    empty = entry("/p", parts=Parts(1000))
    full = entry("/p", parts=Parts(1000).add(0, b"x" * 500))
    assert full.size - empty.size == 500 + SPAN_OVERHEAD
    store.put(full)
    assert store.bytes == full.size
    store.used(full)
    assert store.stats.hits == 1
    store.discard(empty)  # not the one stored: kept
    assert len(store) == 1
    store.discard(full)
    assert (len(store), store.bytes) == (0, 0)
