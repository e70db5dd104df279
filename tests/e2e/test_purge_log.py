"""The purge log: no purge lost, no memory tier dropped, when Redis restarts or an instance
falls behind; and followers that back off when Redis refuses them."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryStore
from proxy.cache.policy import CacheRules
from proxy.config.redis import RedisSettings
from proxy.shared import purge_log
from proxy.shared.purge_follower import PurgeFollower
from proxy.shared.purge_log import ALL, Outbox, Purge, Recent, after_gap, newer
from proxy.shared.reconnect import Backoff
from proxy.shared.redis import SharedRedis
from tests.conftest import Origin, StartProxy, get
from tests.e2e.test_shared_cache import admin, eventually, shared
from tests.redis_servers import RedisServer

# --- the pure parts ------------------------------------------------------------------


def test_after_a_gap_only_a_fresh_log_after_a_short_deafness_is_read_whole() -> None:
    assert after_gap(lineage_changed=True, deaf_for=3.0) == "read_all"
    assert after_gap(lineage_changed=True, deaf_for=purge_log.TRUST + 1) == "mark"
    assert after_gap(lineage_changed=False, deaf_for=0.5) == "mark"  # trimmed past us


def test_stream_ids_compare_as_numbers() -> None:
    assert newer("1700000000001-0", "1700000000000-5")
    assert newer("1700000000000-10", "1700000000000-9")
    assert not newer("1700000000000-0", "1700000000000-0")
    assert newer("5-0", None)


def test_the_outbox_keeps_each_purge_once_and_never_drops_one() -> None:
    box = Outbox(limit=3)
    for value in ("/a", "/b", "/a"):
        box.add(Purge("url", value))
    assert len(box) == 2 and box.first() == Purge("url", "/a")
    box.add(Purge("tag", "t"))
    box.add(Purge("prefix", "/p"))  # one too many: everything is purged instead
    assert (len(box), box.first()) == (1, ALL)
    box.add(Purge("url", "/c"))
    assert (len(box), box.first()) == (1, ALL)
    box.done(ALL)
    assert box.first() is None


def test_recent_purges_are_chosen_by_when_they_were_logged() -> None:
    now = [100.0]
    recent = Recent(limit=10, clock=lambda: now[0])
    recent.add(Purge("url", "/old"))
    now[0] = 150.0
    recent.add(Purge("url", "/new"))
    recent.add(Purge("url", "/new"))
    assert recent.since(120.0) == [Purge("url", "/new")]


def test_backoff_grows_while_attempts_fail_fast_and_starts_over_after_a_steady_one() -> None:
    now = [0.0]
    backoff = Backoff(first=0.1, most=5.0, steady=10.0, clock=lambda: now[0], jitter=lambda: 1.0)
    delays = []
    for _ in range(8):
        delays.append(backoff.next_delay())
        now[0] += delays[-1]
        backoff.began()
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    now[0] += 11.0  # that attempt held for 11 s
    assert backoff.next_delay() == 0.1
    half = Backoff(first=1.0, jitter=lambda: 0.0)
    assert half.next_delay() == 0.5  # jittered down to half at most


# --- followers on a real Redis, driven step by step -----------------------------------


class Instance:
    """A follower with a memory tier of its own; its catch-ups are called by the test."""

    def __init__(self, url: str, prefix: str, clock: Any = time.monotonic, **redis: Any) -> None:
        settings = RedisSettings(url=url, key_prefix=prefix, timeout=2, **redis)
        self.redis = SharedRedis(settings)
        self.applied: list[Purge] = []
        self.memory = MemoryStore(1 << 20)
        self.log = PurgeFollower(
            self.redis,
            uuid.uuid4().hex,
            self.applied.append,
            self.memory.mark_all,
            self._purge_shared,
            lambda key: None,
            clock,
        )

    async def _purge_shared(self, purge: Purge) -> int:
        return 0

    async def follow(self) -> None:
        """Catch up as the follower's poll does: a failure (a pooled connection to a Redis
        that restarted) counts as losing touch, and the next poll tries again."""
        for _ in range(3):
            await self.log._poll()
            if self.log.following:
                return
        raise AssertionError("could not catch up")

    async def close(self) -> None:
        await self.redis.close()


@pytest.fixture
async def pair(redis_server: RedisServer) -> Any:
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    now = [1000.0]
    a = Instance(redis_server.url, prefix)
    b = Instance(redis_server.url, prefix, clock=lambda: now[0])
    yield a, b, now
    await a.close()
    await b.close()


async def test_a_purge_lost_with_redis_is_sent_again_by_its_maker(
    redis_server: RedisServer, pair: Any
) -> None:
    a, b, _ = pair
    await a.follow()
    await b.follow()
    await a.log.publish(Purge("url", "/x"))  # B has not read it when Redis goes
    redis_server.stop()
    redis_server.start()  # empty: the log is gone, and the purge with it
    await b.follow()  # B was following until just now: it keeps its memory...
    await a.follow()  # ...and A, seeing the log is new, logs its last purges again
    await b.follow()
    assert b.applied == [Purge("url", "/x")]
    assert (a.log.stats.replayed, b.log.stats.marked) == (1, 0)


async def test_an_instance_deaf_for_too_long_marks_its_memory_instead(
    redis_server: RedisServer, pair: Any
) -> None:
    _, b, now = pair
    await b.follow()
    redis_server.stop()
    redis_server.start()
    now[0] += purge_log.TRUST + 1  # the others' replays may not reach back that far
    b.memory.put(_entry("/kept"))
    await b.follow()
    assert b.log.stats.marked == 1
    kept = b.memory.peek("h/kept?", CIMultiDict())
    assert kept is not None and kept.cc.no_cache  # still there, to be revalidated


async def test_a_log_trimmed_past_an_instance_makes_it_revalidate_not_drop(
    redis_server: RedisServer,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    a = Instance(redis_server.url, prefix, purge_log_length=10)
    b = Instance(redis_server.url, prefix, purge_log_length=10)
    try:
        await a.log.catch_up()
        await b.log.catch_up()
        b.memory.put(_entry("/kept"))
        for i in range(15):  # more than the log keeps: B cannot know them all
            await a.log.publish(Purge("url", f"/p{i}"))
        await b.log.catch_up()
        assert b.log.stats.marked == 1 and b.applied == []
        assert len(b.memory) == 1
        await a.log.publish(Purge("url", "/after"))
        await b.log.catch_up()  # following again from the newest entry
        assert b.applied == [Purge("url", "/after")]
    finally:
        await a.close()
        await b.close()


def _entry(path: str) -> Entry:
    return Entry.build(
        status=200,
        reason="OK",
        headers=CIMultiDict({"Cache-Control": "max-age=60", "ETag": '"1"'}),
        body=b"x",
        request_headers=CIMultiDict(),
        request_time=time.time(),
        response_time=time.time(),
        rules=CacheRules(ttl=60),
        primary=f"h{path}?",
        url_key=f"h{path}?",
        path=path,
    )


# --- through running proxies --------------------------------------------------------


def etagged(origin: Origin) -> None:
    """Responds with an ETag, and 304 to a request that has it."""

    def respond(request: web.Request) -> web.Response:
        tag = f'"{request.path}"'
        headers = {"Cache-Control": "max-age=60", "ETag": tag}
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers=headers)
        return web.Response(text=f"{request.path} v{origin.hits[request.path]}", headers=headers)

    origin.respond = respond


async def test_a_redis_restart_costs_no_instance_its_memory_and_a_purge_made_meanwhile_reaches_all(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    config = shared({"url": redis_server.url, "timeout": 0.5})
    a, b = await start_proxy(origin.url, **config), await start_proxy(origin.url, **config)
    paths = [f"/hot/{i}" for i in range(20)]
    for path in paths:
        await get(http, a, path)
        await get(http, b, path)  # a shared hit, now in B's memory too
    assert sum(origin.hits.values()) == 20

    redis_server.stop()
    status, result = await admin(http, a, "POST", "/cache/purge", json={"url": paths[0]})
    resp, _ = await get(http, b, paths[0])
    assert resp.headers["X-Cache"] == "HIT"  # B cannot know yet
    redis_server.start()  # empty

    async def b_has_the_purge() -> bool:
        resp, _ = await get(http, b, paths[0])
        return resp.headers["X-Cache"] != "HIT"

    await eventually(b_has_the_purge, within=15)
    # Nothing else went upstream: every other key is still in both memories.
    for proxy in (a, b):
        for path in paths[1:]:
            resp, _ = await get(http, proxy, path)
            assert resp.headers["X-Cache"] == "HIT", path
    assert all(origin.hits[p] == 1 for p in paths[1:])
    for proxy in (a, b):
        _, stats = await admin(http, proxy, "GET", "/cache/stats")
        assert (stats["shared"]["l1_marked"], stats["shared"]["purges_queued"]) == (0, 0)
    # The purge was accepted while Redis was down: applied on A, queued for the others.
    assert (status, result["purged"], result["queued"]) == (202, 1, True)


async def test_an_instance_that_fell_behind_the_log_revalidates_instead_of_refetching(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    etagged(origin)
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    redis_server.cli("ACL", "SETUSER", "b", "on", ">secret", "~*", "&*", "+@all")
    url_b = redis_server.url.replace("redis://", "redis://b:secret@")
    a = await start_proxy(
        origin.url,
        **shared({"url": redis_server.url, "key_prefix": prefix, "purge_log_length": 10}),
    )
    b = await start_proxy(
        origin.url, **shared({"url": url_b, "key_prefix": prefix, "purge_log_length": 10})
    )
    await get(http, b, "/kept")
    redis_server.cli("ACL", "SETUSER", "b", "off")
    redis_server.cli("CLIENT", "KILL", "USER", "b")  # B is cut off from Redis...
    for i in range(15):  # ...while more purges than the log keeps are made
        status, _ = await admin(http, a, "POST", "/cache/purge", json={"url": f"/p{i}"})
        assert status == 200
    redis_server.cli("ACL", "SETUSER", "b", "on")

    async def b_caught_up() -> bool:
        _, stats = await admin(http, b, "GET", "/cache/stats")
        return bool(stats["shared"]["subscribed"])

    await eventually(b_caught_up, within=15)
    _, stats = await admin(http, b, "GET", "/cache/stats")
    assert stats["shared"]["l1_marked"] == 1
    # Its memory was kept but not trusted: the next request revalidates, conditionally.
    resp, body = await get(http, b, "/kept")
    assert (resp.headers["X-Cache"], body) == ("REVALIDATED", b"/kept v1")
    assert origin.requests[-1].headers["If-None-Match"] == '"/kept"'
    resp, _ = await get(http, b, "/kept")
    assert resp.headers["X-Cache"] == "HIT"


def _rejected_subscribes(server: RedisServer) -> int:
    for line in server.cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_subscribe:"):
            match = re.search(r"rejected_calls=(\d+)", line)
            return int(match.group(1)) if match else 0
    return 0


async def test_followers_refused_subscribe_back_off_and_keep_memory(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    redis_server.cli(
        "ACL", "SETUSER", "nosub", "on", ">pw", "~*", "&*", "+@all", "-subscribe", "-psubscribe"
    )
    url = redis_server.url.replace("redis://", "redis://nosub:pw@")
    proxy = await start_proxy(origin.url, **shared({"url": url}))
    await get(http, proxy, "/kept")
    before = _rejected_subscribes(redis_server)
    await asyncio.sleep(4.0)
    # Both followers (purges, revocations): a growing delay, not ten attempts a second.
    assert _rejected_subscribes(redis_server) - before <= 20  # (it was 76)
    resp, _ = await get(http, proxy, "/kept")
    assert resp.headers["X-Cache"] == "HIT"  # not wiped at every attempt
    status, health = await admin(http, proxy, "GET", "/health")
    assert (status, health["checks"]["redis"]["error"]) == (200, "purge subscription lost")
