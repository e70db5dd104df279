"""The Redis tier of one process: L2 lookups and stores, and purges that reach every instance.

Redis is an accelerator here, never a dependency: every call goes through the shared
guard (budget, timeout, breaker), and a failure is a miss, a skipped store or a purge reported as
incomplete. Purges travel over Redis pub/sub so each instance drops its own L1 copies;
an instance whose subscription broke may have missed some, so when it subscribes again it
drops its whole L1 rather than serve something purged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from proxy.cache import policy
from proxy.cache.entry import Entry
from proxy.cache.redis_store import RedisStore
from proxy.cache.stores import MemoryStore, StoreUnavailable
from proxy.eventloop import cancel
from proxy.redis_conn import SharedRedis

log = logging.getLogger("cacheproxy.shared")

PurgeKind = Literal["url", "prefix", "tag"]
_RESUBSCRIBE_MAX = 5.0  # seconds between attempts to get the purge subscription back
# Encoded variants worth sending to Redis with their entry: compressing costs far more
# than moving the bytes. (Decoded and as-stored variants are cheap to remake.)
SHARED_VARIANTS = frozenset({"br", "zstd", "gzip"})
_BACKGROUND_MAX = 64  # variant uploads in flight, at most
_FOLLOW_POLL = 0.25  # seconds between checks of a fetch lock while waiting on it
_PING_EVERY = 2.0  # seconds; a subscription silent for 3 of these is taken as lost


@dataclass
class SharedStats:
    hits: int = 0
    misses: int = 0
    stores: int = 0
    errors: int = 0
    purge_messages: int = 0
    collapsed: int = 0  # requests answered by another instance's fetch (coalesce: global)
    l1_drops: int = 0  # whole-L1 clears after the purge subscription came back


@dataclass(frozen=True, slots=True)
class PurgeResult:
    local: int  # entries removed from this process's memory
    shared: int  # entries removed from Redis
    error: str | None  # why Redis (and so the other instances) could not be reached


class SharedTier:
    def __init__(
        self, redis: SharedRedis, memory: MemoryStore, key_secret: str | None = None
    ) -> None:
        """`key_secret` (cache.key_secret): entries in Redis are authenticated with it."""
        self.redis = redis
        self.memory = memory
        auth = key_secret.encode() if key_secret else None
        self.store = RedisStore(redis.client, redis.run, f"{redis.prefix}c:", auth)
        self.channel = f"{redis.prefix}purge"
        self.instance = uuid.uuid4().hex
        self.stats = SharedStats()
        self.subscribed = False
        self._listener: asyncio.Task[None] | None = None
        self._done: dict[str, asyncio.Event] = {}  # fetch locks we wait on -> set when freed
        self._background: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------

    async def start(self, wait: float = 2.0) -> None:
        """Subscribe to purges; waits (bounded) so a purge right after start-up is seen."""
        self._listener = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), wait)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await cancel(self._listener)

    @property
    def healthy(self) -> bool:
        return self.subscribed and self.redis.guard.healthy

    # --- lookups and stores ----------------------------------------------------

    async def lookup(
        self, primary: str, url_key: str, request_headers: policy.Headers, max_size: int
    ) -> tuple[Entry | None, bytes | None]:
        """(entry or None, the URL's purge generation; None when Redis did not answer).
        An entry whose body is over `max_size` bytes (the route's max_entry_size) is a
        miss: Redis is not trusted to keep to it."""
        self.redis.request_budget()
        try:
            entry, generation = await self.store.get(primary, url_key, request_headers, max_size)
        except StoreUnavailable:
            self.stats.errors += 1
            return None, None
        if entry is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return entry, generation

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
                    entry, _ = await self.lookup(primary, url_key, request_headers, max_size)
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

    async def purge(self, kind: PurgeKind, value: str) -> PurgeResult:
        """Remove from this L1, from Redis, and (by message) from every other L1."""
        self.redis.request_budget()
        local = self._purge_local(kind, value)
        try:
            shared = await getattr(self.store, f"purge_{kind}")(value)
            message = orjson.dumps({"from": self.instance, "kind": kind, "value": value})
            await self.redis.run(
                "publish", lambda: self.redis.client.publish(self.channel, message)
            )
        except StoreUnavailable as exc:
            self.stats.errors += 1
            log.warning("purge %s %r reached only this instance: %s", kind, value, exc)
            return PurgeResult(local, 0, str(exc))
        return PurgeResult(local, shared, None)

    def _purge_local(self, kind: PurgeKind, value: str) -> int:
        purge: Callable[[str], int] = getattr(self.memory, f"purge_{kind}")
        return purge(value)

    async def _listen(self) -> None:
        delay = 0.1
        broken = False
        while True:
            pubsub = self.redis.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                if broken:
                    # Purges sent while we were deaf are lost: nothing in L1 can be trusted.
                    dropped = self.memory.clear()
                    self.stats.l1_drops += 1
                    log.warning("purge subscription restored; dropped %d L1 entries", dropped)
                self.subscribed = True
                self._ready.set()
                delay = 0.1
                await self._receive(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: resubscribe, never die
                if self.subscribed:
                    log.warning("purge subscription lost: %r", exc)
                self.subscribed = False
                broken = True
                self._ready.set()  # start-up must not wait for a Redis that is down
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RESUBSCRIBE_MAX)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _receive(self, pubsub: Any) -> None:
        """Apply purge messages until the connection fails or goes silent (pinged)."""
        loop = asyncio.get_running_loop()
        heard = next_ping = loop.time()
        while True:
            message = await pubsub.get_message(timeout=_PING_EVERY)
            now = loop.time()
            if message is not None:
                heard = now
                if message.get("type") == "message":
                    self._apply(message["data"])
            if now - heard > 3 * _PING_EVERY:
                raise ConnectionError("the purge subscription went silent")
            if now >= next_ping:
                await pubsub.ping()
                next_ping = now + _PING_EVERY

    def _apply(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            kind, value = message["kind"], message["value"]
            if message["from"] == self.instance or not isinstance(value, str):
                return
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed purge message (%d bytes)", len(data))
            return
        if kind == "done":
            waiting = self._done.get(value)
            if waiting is not None:
                waiting.set()
            return
        if kind not in ("url", "prefix", "tag"):
            return
        self.stats.purge_messages += 1
        self._purge_local(kind, value)
