"""RedisStore against real Redis: a single node and a 3-node cluster."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import pytest
from multidict import CIMultiDict

from proxy.cache.entry import Entry
from proxy.cache.entry_format import encode
from proxy.cache.policy import CacheRules
from proxy.cache.tags import TagFields
from proxy.config.redis import RedisSettings
from proxy.shared.breaker import CircuitBreaker
from proxy.shared.redis import Client, RedisGuard, SharedRedis
from proxy.shared.store import RedisStore
from tests.cache.entry_v1 import encode_v1
from tests.redis_servers import RedisCluster, RedisServer

NOW = time.time()
T = TypeVar("T")


@pytest.fixture(params=["node", "cluster"])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[SharedRedis]:
    if request.param == "node":
        server: RedisServer = request.getfixturevalue("redis_server")
        settings = RedisSettings(url=server.url, timeout=2)
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        settings = RedisSettings(cluster={"nodes": cluster.urls}, timeout=2)
    s = SharedRedis(settings)
    assert (s.reads is None) == (request.param == "cluster")  # lookups read on our own
    yield s
    await s.close()


@pytest.fixture
def client(shared: SharedRedis) -> Client:
    return shared.client


@pytest.fixture
def store(shared: SharedRedis) -> RedisStore:
    """Lookups read as SharedTier's do: on connections of our own to a single node
    (proxy/shared/reads.py), through redis-py's client on a cluster."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    return RedisStore(shared.client, shared.run, prefix, mget=shared.mget)


def entry(
    path: str = "/q/AAPL",
    body: bytes = b"quote",
    vary: str | None = None,
    request: dict[str, str] | None = None,
    tags: str | None = None,
    user: str = "",
    etag: str | None = None,
    at: float = NOW,
) -> Entry:
    headers = CIMultiDict({"Cache-Control": "max-age=60"})
    if etag:
        headers["ETag"] = etag
    if vary:
        headers["Vary"] = vary
    if tags:
        headers["Surrogate-Key"] = tags
    url_key = f"api{path}?"
    return Entry.build(
        status=200,
        reason="OK",
        headers=headers,
        body=body,
        request_headers=CIMultiDict(request or {}),
        request_time=at,
        response_time=at,
        rules=CacheRules(),
        primary=url_key + (f"|u:{user}" if user else ""),
        url_key=url_key,
        path=path,
        tag_fields=TagFields.named(["Surrogate-Key"]),
    )


def key_of(store: RedisStore, e: Entry) -> str:
    return store._entry_key(store._url(e.url_key)[1], e.primary, False, ())


async def test_round_trip(store: RedisStore) -> None:
    e = entry()
    found, generation, _ = await store.get(e.primary, e.url_key, CIMultiDict())
    assert (found, generation) == (None, b"0")
    assert await store.put(e, 60, generation)
    found, _, _ = await store.get(e.primary, e.url_key, CIMultiDict())
    assert found is not None
    assert (found.body, found.lifetime, found.path) == (b"quote", 60, "/q/AAPL")


async def test_vary_selects_the_variant(store: RedisStore) -> None:
    en = entry(body=b"hello", vary="Accept-Language", request={"Accept-Language": "en"})
    de = entry(body=b"hallo", vary="Accept-Language", request={"Accept-Language": "de"})
    for e in (en, de):
        assert await store.put(e, 60, b"0")
    for lang, body in (("en", b"hello"), ("de", b"hallo")):
        found, _, _ = await store.get(
            en.primary, en.url_key, CIMultiDict({"Accept-Language": lang})
        )
        assert found is not None and found.body == body
    missing, _, _ = await store.get(en.primary, en.url_key, CIMultiDict({"Accept-Language": "fr"}))
    assert missing is None


async def test_a_varying_entry_is_read_in_one_call_once_its_record_was(
    shared: SharedRedis,
) -> None:
    calls: list[int] = []

    def counted(op: str, keys: Sequence[str]) -> Awaitable[list[bytes | None]]:
        calls.append(len(keys))
        return shared.mget(op, keys)

    store = RedisStore(shared.client, shared.run, f"test-{uuid.uuid4().hex[:8]}:", mget=counted)
    en = entry(body=b"hello", vary="Accept-Language", request={"Accept-Language": "en"})
    de = entry(body=b"hallo", vary="Accept-Language", request={"Accept-Language": "de"})
    for e in (en, de):
        assert await store.put(e, 60, b"0")

    async def body(**request: str) -> bytes | None:
        found, _, _ = await store.get(en.primary, en.url_key, CIMultiDict(request))
        return None if found is None else found.body

    assert await body(**{"Accept-Language": "en"}) == b"hello"
    assert calls == [4, 2]  # the record first read: its variant in a second call
    assert await body(**{"Accept-Language": "de"}) == b"hallo"
    assert await body(**{"Accept-Language": "fr"}) is None
    assert calls == [4, 2, 6, 6]  # then record and variant in one
    # The origin varies on something else now: the record says so, the right variant is read.
    gz = entry(body=b"gz", vary="Accept-Encoding", request={"Accept-Encoding": "gzip"})
    assert await store.put(gz, 60, b"0")
    calls.clear()
    assert await body(**{"Accept-Encoding": "gzip", "Accept-Language": "en"}) == b"gz"
    assert await body(**{"Accept-Encoding": "gzip"}) == b"gz"
    assert calls == [6, 2, 6]
    # Purged, record and all: a miss, and the next lookup reads no variant.
    await store.purge_url(en.url_key)
    calls.clear()
    assert await body(**{"Accept-Encoding": "gzip"}) is None
    assert await body(**{"Accept-Encoding": "gzip"}) is None
    assert calls == [6, 4]


async def test_purge_url_removes_every_variant_and_fences_older_fetches(
    store: RedisStore,
) -> None:
    alice, bob = entry(user="alice"), entry(user="bob")
    _, before, _ = await store.get(alice.primary, alice.url_key, CIMultiDict())
    for e in (alice, bob):
        assert await store.put(e, 60, before)
    assert await store.purge_url(alice.url_key) == 2
    for e in (alice, bob):
        assert (await store.get(e.primary, e.url_key, CIMultiDict()))[0] is None
    # A response fetched before the purge must not land after it.
    assert not await store.put(alice, 60, before)
    _, after, _ = await store.get(alice.primary, alice.url_key, CIMultiDict())
    assert after != before
    assert await store.put(alice, 60, after)


async def test_purge_prefix_and_tag(store: RedisStore) -> None:
    signals = [entry(f"/signals/{i}", tags="signals") for i in range(30)]
    quote = entry("/quotes/AAPL", tags="quotes aapl")
    for e in (*signals, quote):
        assert await store.put(e, 60, b"0")
    assert await store.purge_prefix("/signals/", batch=7) == 30
    assert (await store.get(signals[3].primary, signals[3].url_key, CIMultiDict()))[0] is None
    assert (await store.get(quote.primary, quote.url_key, CIMultiDict()))[0] is not None
    assert await store.purge_tag("signals") == 0  # already gone
    assert await store.purge_tag("aapl") == 1
    assert (await store.get(quote.primary, quote.url_key, CIMultiDict()))[0] is None


async def test_an_entrys_tags_are_indexed_in_one_call_however_many(client: Client) -> None:
    # One call a tag spent the request's Redis time on an origin's long Surrogate-Key and
    # left the rest unindexed: a purge by one of them missed the entry.
    guard = RedisGuard(2, CircuitBreaker())
    calls: list[str] = []

    async def counted(op: str, call: Callable[[], Awaitable[T]]) -> T:
        calls.append(op)
        return await guard.run(op, call)

    store = RedisStore(client, counted, f"test-{uuid.uuid4().hex[:8]}:")
    many = entry(tags=" ".join(f"tag-{i}" for i in range(300)))
    assert await store.put(many, 60, b"0")
    assert len(calls) == 3  # the entry, its path, its tags
    assert await store.purge_tag("tag-299") == 1
    assert (await store.get(many.primary, many.url_key, CIMultiDict()))[0] is None


async def test_entries_expire_natively(store: RedisStore, client: Client) -> None:
    e = entry()
    assert await store.put(e, 1.5, b"0")
    assert 1000 < await client.pttl(key_of(store, e)) <= 1500


async def test_corrupt_or_foreign_values_are_counted_misses(
    store: RedisStore, client: Client
) -> None:
    e = entry()
    assert await store.put(e, 60, b"0")
    key = key_of(store, e)
    value = await client.get(key)
    assert isinstance(value, bytes)
    for bad in (value[:-3], b"\x80\x04\x95pickled", b'{"status": 200}'):
        await client.set(key, bad)
        assert (await store.get(e.primary, e.url_key, CIMultiDict()))[0] is None
    assert store.corrupt == 3


async def test_expired_paths_are_forgotten(store: RedisStore, client: Client) -> None:
    e = entry("/old")
    assert await store.put(e, 1, b"0")
    assert await store.expire_paths(NOW + 0.5) == 0
    assert await store.expire_paths(NOW + 5) == 1
    assert await client.zcard(f"{store._p}{{paths}}") == 0


async def test_a_version_1_value_is_a_hit_and_a_corrupt_version_2_value_a_counted_miss(
    store: RedisStore, client: Client
) -> None:
    # Instances mid-upgrade share one Redis: an older one wrote version 1.
    e = entry(tags="t1")
    assert await store.put(e, 60, b"0")
    key = key_of(store, e)
    await client.set(key, encode_v1(e))
    found, _, _ = await store.get(e.primary, e.url_key, CIMultiDict())
    assert found is not None and (found.body, found.head, found.tags) == (b"quote", e.head, ("t1",))
    value = encode(e)
    assert value[4] == 2
    await client.set(key, value[:9] + bytes([value[9] ^ 1]) + value[10:])
    assert (await store.get(e.primary, e.url_key, CIMultiDict()))[0] is None
    assert store.corrupt == 1


async def test_a_soft_purge_marks_entries_which_their_readers_make_stale(
    store: RedisStore, client: Client
) -> None:
    # Fresh when purged: made now, not when the module was (a long run takes minutes).
    now = time.time() - 1
    signals = [entry(f"/signals/{i}", tags="signals", etag='"s"', at=now) for i in range(30)]
    quote = entry("/quotes/AAPL", tags="quotes aapl", at=now)  # no validator
    varying = [
        entry("/v", lang.encode(), "Accept-Language", {"Accept-Language": lang}, at=now)
        for lang in ("en", "de")
    ]
    for e in (*signals, quote, *varying):
        assert await store.put(e, 60, b"0")
    _, before, _ = await store.get(quote.primary, quote.url_key, CIMultiDict())
    purged_at = time.time() - 0.5  # by the purging instance's clock
    age_then = purged_at - now
    # Paged past its own entries, which stay (batch 7 of 30).
    assert await store.purge_prefix("/signals/", soft_at=purged_at, batch=7) == 30
    assert await store.purge_tag("aapl", soft_at=purged_at) == 1
    assert await store.purge_url("api/v?", soft_at=purged_at) == 2  # the Vary record is none
    found, after, grace = await store.get(signals[3].primary, signals[3].url_key, CIMultiDict())
    assert found is not None and found.body == b"quote" and grace  # fresh, with an ETag
    assert found.lifetime == pytest.approx(age_then)  # stale from the purge on
    found, after, grace = await store.get(quote.primary, quote.url_key, CIMultiDict())
    assert found is not None and not grace and found.lifetime == pytest.approx(age_then)
    assert after != before  # a fetch begun before it is not stored after it
    assert not await store.put(quote, 60, before)
    de = CIMultiDict({"Accept-Language": "de"})
    found, _, _ = await store.get(varying[1].primary, varying[1].url_key, de)
    assert found is not None and found.body == b"de" and found.lifetime == pytest.approx(age_then)
    # Moved aside: an older version, reading only the entry key, fetches anew.
    assert not await client.exists(key_of(store, signals[0]))
    # Tagged as before: a hard purge by the tag still finds them.
    assert await store.purge_tag("signals") == 30
    assert not await client.exists(key_of(store, signals[0]) + ":s")
    assert await store.purge_tag("aapl", soft_at=purged_at) == 0  # aside already: stays so
    found, _, _ = await store.get(quote.primary, quote.url_key, CIMultiDict())
    assert found is not None and found.lifetime == pytest.approx(age_then)


async def test_a_store_after_a_soft_purge_is_fresh(store: RedisStore) -> None:
    e = entry(etag='"1"', at=time.time() - 1)
    assert await store.put(e, 60, b"0")
    assert await store.purge_url(e.url_key, soft_at=time.time()) == 1
    found, generation, grace = await store.get(e.primary, e.url_key, CIMultiDict())
    assert found is not None and grace
    assert await store.put(entry(etag='"1"', at=time.time()), 60, generation)  # revalidated
    found, _, grace = await store.get(e.primary, e.url_key, CIMultiDict())
    assert found is not None and not grace and found.lifetime == 60.0


async def test_a_soft_purge_time_from_a_clock_ahead_or_unreadable_counts_as_now(
    store: RedisStore, client: Client
) -> None:
    made = time.time() - 1
    e = entry(etag='"1"', at=made)
    assert await store.put(e, 60, b"0")
    blob = await client.get(key_of(store, e))
    assert isinstance(blob, bytes)
    await client.delete(key_of(store, e))
    for when in (str(time.time() + 3600).encode(), b"nan", b"garbage", b""):
        await client.set(key_of(store, e) + ":s", when + b"|" + blob)
        found, _, _ = await store.get(e.primary, e.url_key, CIMultiDict())
        assert found is not None and found.lifetime <= time.time() - made  # stale by now
