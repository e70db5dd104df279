"""The Redis tier of one process: L2 lookups and stores, and purges that reach every instance.

Redis is an accelerator here, never a dependency: every call goes through the shared
guard (budget, timeout, breaker), and a failure is a miss, a skipped store or a purge
queued until Redis responds again. Purges reach the other instances through the purge log
(proxy/shared/purge_log.py, proxy/shared/purge_follower.py), so that none is ever missed and a
reconnection costs no instance its L1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import orjson

from proxy.cache import policy
from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryStore, StoreUnavailable
from proxy.shared.purge_follower import PurgeFollower
from proxy.shared.purge_log import Purge
from proxy.shared.redis import SharedRedis
from proxy.shared.store import RedisStore

log = logging.getLogger("cacheproxy.shared")

PurgeKind = Literal["url", "prefix", "tag"]
# Encoded variants worth sending to Redis with their entry: compressing costs far more
# than moving the bytes. (Decoded and as-stored variants are cheap to remake.)
SHARED_VARIANTS = frozenset({"br", "zstd", "gzip"})
_BACKGROUND_MAX = 64  # variant uploads in flight, at most
_FOLLOW_POLL = 0.25  # seconds between checks of a fetch lock while waiting on it


@dataclass
class SharedStats:
    hits: int = 0
    misses: int = 0
    stores: int = 0
    errors: int = 0
    collapsed: int = 0  # requests served by another instance's fetch (coalesce: global)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    local: int  # entries removed from this process's memory (made stale, when soft)
    shared: int  # entries removed from Redis (marked, when soft)
    # Why Redis (and so the other instances) could not be reached: the purge is queued
    # and sent when Redis responds again.
    error: str | None


class SharedTier:
    def __init__(
        self,
        redis: SharedRedis,
        memory: MemoryStore,
        key_secret: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`key_secret` (cache.key_secret): entries in Redis are authenticated with it.
        `clock`: the one entries' ages are measured by (when a soft purge happened)."""
        self.redis = redis
        self.memory = memory
        self._clock = clock
        auth = key_secret.encode() if key_secret else None
        self.store = RedisStore(redis.client, redis.run, f"{redis.prefix}c:", auth, redis.mget)
        self.instance = uuid.uuid4().hex
        self.channel = f"{redis.prefix}purge"
        self.stats = SharedStats()
        self.log = PurgeFollower(
            redis, self.instance, self._apply, memory.mark_all, self._purge_shared, self._wake
        )
        self._done: dict[str, asyncio.Event] = {}  # fetch locks we wait on -> set when freed
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------

    async def start(self, wait: float = 2.0) -> None:
        """Follow purges; waits (bounded) so a purge right after start-up is seen."""
        await self.log.start(wait)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.log.close()

    @property
    def subscribed(self) -> bool:
        """Following purges: subscribed, and the purge log read up to date."""
        return self.log.following

    @property
    def healthy(self) -> bool:
        return self.subscribed and self.redis.guard.healthy

    # --- lookups and stores ----------------------------------------------------

    async def lookup(
        self, primary: str, url_key: str, request_headers: policy.Headers, max_size: int
    ) -> tuple[Entry | None, bytes | None, bool]:
        """(entry or None, the URL's purge generation or None when Redis did not respond,
        whether the entry is in a soft purge's grace: MemoryStore.put's `grace`).
        An entry whose body is over `max_size` bytes (the route's max_entry_size) is a
        miss: Redis is not trusted to keep to it."""
        self.redis.request_budget()
        try:
            entry, generation, grace = await self.store.get(
                primary, url_key, request_headers, max_size
            )
        except StoreUnavailable:
            self.stats.errors += 1
            return None, None, False
        if entry is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return entry, generation, grace

    async def save(self, entry: Entry, generation: bytes, rules: policy.CacheRules) -> None:
        self.redis.request_budget()
        ttl = policy.shared_store_ttl(
            entry.lifetime, entry.age(entry.response_time), entry.headers, rules
        )
        try:
            if await self.store.put(entry, ttl, generation):
                self.stats.stores += 1
        except StoreUnavailable:
            self.stats.errors += 1

    def share_variants(self, entry: Entry) -> None:
        """In the background: another instance then serves br/zstd/gzip without encoding."""
        chosen = [k for k in entry.variants if k in SHARED_VARIANTS]
        if not chosen or len(self._background) >= _BACKGROUND_MAX:
            return  # an optimisation only: never let it pile up
        task = asyncio.create_task(self._add_variants(entry, chosen))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _add_variants(self, entry: Entry, chosen: list[str]) -> None:
        try:
            await self.store.add_variants(entry, chosen)
        except StoreUnavailable:
            self.stats.errors += 1

    # --- coalescing across instances (cache.coalesce: global) ------------------

    async def lead(self, primary: str, url_key: str, ttl: float) -> bool:
        """Try to become the one instance fetching this key. True also when Redis is
        unreachable: then every instance fetches for itself, as without coalescing."""
        self.redis.request_budget()
        key = self.store.lock_key(primary, url_key)
        self._done.setdefault(key, asyncio.Event())  # before the attempt: no lost wake-up
        try:
            won = await self.store.lock(key, self.instance, ttl)
        except StoreUnavailable:
            self.stats.errors += 1
            won = True
        if won:
            self._done.pop(key, None)
        return won

    async def follow(
        self,
        primary: str,
        url_key: str,
        request_headers: policy.Headers,
        wait: float,
        max_size: int,
    ) -> Entry | None:
        """Wait (at most `wait` s) for the leading instance's fetch, then read its entry.
        None: nothing to share (not storable, leader gone, too slow): fetch yourself."""
        self.redis.request_budget()
        key = self.store.lock_key(primary, url_key)
        done = self._done.setdefault(key, asyncio.Event())
        deadline = asyncio.get_running_loop().time() + wait
        try:
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return None
                # The message wakes us at once; the poll covers a lost message or a dead leader.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), min(left, _FOLLOW_POLL))
                if done.is_set() or not await self.store.locked(key):
                    entry, _, _ = await self.lookup(primary, url_key, request_headers, max_size)
                    if entry is not None:
                        self.stats.collapsed += 1
                    return entry
        except StoreUnavailable:
            self.stats.errors += 1
            return None
        finally:
            if self._done.get(key) is done:
                del self._done[key]

    async def done(self, primary: str, url_key: str) -> None:
        """Free the fetch lock and wake the instances waiting on it."""
        self.redis.request_budget()
        key = self.store.lock_key(primary, url_key)
        message = orjson.dumps({"from": self.instance, "kind": "done", "value": key})
        client = self.redis.client
        try:
            await self.store.unlock(key, self.instance)
            await self.redis.run("publish", lambda: client.publish(self.channel, message))
        except StoreUnavailable:
            self.stats.errors += 1  # waiters notice the lock is gone, or time out

    # --- purges ----------------------------------------------------------------

    async def purge(self, kind: PurgeKind, value: str, soft: bool = False) -> PurgeResult:
        """Remove from this L1 at once, then from Redis and (through the purge log) from
        every other L1; when Redis cannot be reached in this request's budget, the purge
        is queued and sent when it responds again. `soft`: mark stale everywhere instead
        (MemoryStore.purge_url ...)."""
        self.redis.request_budget()
        purge = Purge(kind, value, soft)
        local = self._purge_local(purge)
        try:
            shared = await self.log.publish(purge)
        except StoreUnavailable as exc:
            self.stats.errors += 1
            self.log.queue(purge)
            log.warning("purge %s %r queued until Redis responds: %s", kind, value, exc)
            return PurgeResult(local, 0, str(exc))
        return PurgeResult(local, shared, None)

    def _purge_local(self, purge: Purge) -> int:
        method: Callable[[str, float | None], int] = getattr(self.memory, f"purge_{purge.kind}")
        return method(purge.value, self._clock() if purge.soft else None)

    def _apply(self, purge: Purge) -> None:
        """Another instance's purge, from the log."""
        self._purge_local(purge)

    async def _purge_shared(self, purge: Purge) -> int:
        if purge.kind == "all":  # a queue that overflowed: everything, by the path index
            return await self.store.purge_prefix("")
        method = getattr(self.store, f"purge_{purge.kind}")
        return int(await method(purge.value, self._clock() if purge.soft else None))

    def _wake(self, lock_key: str) -> None:
        waiting = self._done.get(lock_key)
        if waiting is not None:
            waiting.set()
