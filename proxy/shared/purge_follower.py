"""The Redis side of the purge log (proxy/shared/purge_log.py): writing purges, following them.

One follower per process: a pub/sub subscription for wake-ups (purges and coalescing's
"done" messages) and reads of the log from the last entry applied, on every
(re)subscription, on every wake-up that names a newer entry, and every `_PING_EVERY`
seconds. Its Redis calls go through the shared guard, each with the whole timeout (this
task is no client request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.cache.memory import StoreUnavailable
from proxy.shared import purge_log
from proxy.shared.purge_log import ANCHOR, PAGE, Outbox, Purge, Recent
from proxy.shared.reconnect import Backoff, subscribe_confirmed
from proxy.shared.redis import SharedRedis
from proxy.tasks import cancel

log = logging.getLogger("cacheproxy.shared")

_RESUBSCRIBE_MAX = 5.0  # seconds between attempts to get the subscription back, at most
_PING_EVERY = 2.0  # seconds; a subscription silent for 3 of these is taken as lost

# KEYS: the log. ARGV: maxlen, from, kind, value, channel, the wake-up message without its
# closing brace ('' for none), soft ('1' or ''). Appends the purge and wakes the followers in
# one round trip.
_APPEND = """
local id
if ARGV[7] == '1' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*',
    'from', ARGV[2], 'kind', ARGV[3], 'value', ARGV[4], 'soft', '1')
else
  id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*',
    'from', ARGV[2], 'kind', ARGV[3], 'value', ARGV[4])
end
if ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[6] .. ',"id":"' .. id .. '"}')
end
return id
"""

# KEYS: lineage. ARGV: a token for a log that has none yet. Returns the log's token.
_LINEAGE = """
local token = redis.call('GET', KEYS[1])
if token then return token end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


@dataclass
class FollowerStats:
    applied: int = 0  # purges from other instances applied here
    marked: int = 0  # times every memory entry was marked for revalidation
    replayed: int = 0  # own purges sent again after Redis lost the log


class PurgeFollower:
    def __init__(
        self,
        redis: SharedRedis,
        instance: str,
        apply: Callable[[Purge], None],
        mark_all: Callable[[], int],
        purge_shared: Callable[[Purge], Awaitable[int]],
        woken: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`apply`: a purge (hard or soft) to this memory tier; `purge_shared`: its Redis side
        (entries);
        `woken`: a coalescing "done" message for that lock key."""
        self.redis = redis
        self.instance = instance
        self.channel = f"{redis.prefix}purge"
        self._key = f"{redis.prefix}{{purges}}"
        self._lineage_key = f"{self._key}:lineage"
        self._maxlen = redis.settings.purge_log_length
        self._append = redis.client.register_script(_APPEND)
        self._lineage_script = redis.client.register_script(_LINEAGE)
        self._apply = apply
        self._mark_all = mark_all
        self._purge_shared = purge_shared
        self._woken = woken
        self._clock = clock
        self.outbox = Outbox(self._maxlen)
        self._recent = Recent(self._maxlen, clock)
        self.stats = FollowerStats()
        self.position: str | None = None  # the last log entry applied
        self.lineage: str | None = None
        self.following = False  # subscribed, and the last read proved continuity
        self._last_good = clock()  # when a read last proved continuity
        self._lost_at: float | None = None  # first failure since then
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._reading = asyncio.Lock()

    # --- lifecycle ---------------------------------------------------------------

    async def start(self, wait: float) -> None:
        """Follow the log; waits (bounded) so that a purge right after start-up is seen."""
        self._task = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), wait)

    async def close(self) -> None:
        await cancel(self._task)

    def counts(self) -> dict[str, int]:
        """For /cache/stats."""
        return {
            "purges_applied": self.stats.applied,
            "purges_queued": len(self.outbox),
            "purges_replayed": self.stats.replayed,
            "l1_marked": self.stats.marked,
        }

    # --- writing -----------------------------------------------------------------

    async def publish(self, purge: Purge) -> int:
        """The purge's Redis side, then its log entry; entries removed from Redis.
        Raises StoreUnavailable: the caller queues it (`queue`)."""
        removed = await self._purge_shared(purge)
        await self._log(purge)
        return removed

    def queue(self, purge: Purge) -> None:
        """Send it when Redis responds again (applied here already)."""
        self.outbox.add(purge)

    async def _log(self, purge: Purge) -> str:
        wake = purge_log.message(purge, self.instance, None)
        keys = [self._key]
        args: list[bytes | str | int] = [
            self._maxlen,
            self.instance,
            purge.kind,
            purge.value.encode("utf-8", "surrogateescape"),
            self.channel,
            b"" if wake is None else wake[:-1],
            b"1" if purge.soft else b"",
        ]
        entry_id = await self.redis.run("purge", lambda: self._append(keys=keys, args=args))
        if purge is not ANCHOR:
            self._recent.add(purge)
        return _text(entry_id)

    async def flush(self) -> None:
        """Send the queued purges, oldest first; stops at the first failure."""
        while (purge := self.outbox.first()) is not None:
            await self.publish(purge)
            self.outbox.done(purge)
            log.info("queued purge %s %r sent", purge.kind, purge.value)

    # --- following ---------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = Backoff(most=_RESUBSCRIBE_MAX)
        client = self.redis.client
        while True:
            pubsub = client.pubsub()
            try:
                await subscribe_confirmed(pubsub, self.channel, self.redis.settings.timeout * 4)
                await self.catch_up()
                self._ready.set()
                await self._receive(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: resubscribe, never die
                if self.following:
                    log.warning("purge log: lost touch with Redis (%r)", exc)
                self._lose()
                self._ready.set()  # start-up must not wait for a Redis that is down
                await backoff.wait()
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _lose(self) -> None:
        self.following = False
        if self._lost_at is None:
            self._lost_at = self._clock()

    async def _receive(self, pubsub: Any) -> None:
        """Wake-ups and polls until the subscription fails or goes silent (pinged)."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        next_poll = heard + _PING_EVERY
        while True:
            message = await pubsub.get_message(timeout=_PING_EVERY)
            now = loop.time()
            if message is not None:
                heard = now
                if message.get("type") == "message":
                    await self._on_message(message["data"])
            if now - heard > 3 * _PING_EVERY:
                raise ConnectionError("the purge subscription went silent")
            if now >= next_poll:
                await pubsub.ping()
                await self._poll()
                next_poll = now + _PING_EVERY

    async def _poll(self) -> None:
        try:
            await self.catch_up()
        except StoreUnavailable:
            self._lose()  # the subscription still stands: the next poll tries again

    async def _on_message(self, data: bytes) -> None:
        try:
            body = orjson.loads(data)
            sender, kind, value = body["from"], body["kind"], body["value"]
            entry_id = body.get("id")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            log.warning("ignored a malformed purge message (%d bytes)", len(data))
            return
        if sender == self.instance or not isinstance(value, str):
            return
        if kind == "done":
            self._woken(value)
            return
        if entry_id is None:
            # From an instance that predates the log: the message is all there is.
            if kind in ("url", "prefix", "tag"):
                self.stats.applied += 1
                self._apply(Purge(kind, value))
            return
        if isinstance(entry_id, str) and purge_log.newer(entry_id, self.position):
            await self._poll()

    async def catch_up(self) -> None:
        """Apply what the log holds past the last entry applied, then send what waits."""
        async with self._reading:  # one read at a time: a poll and a wake-up may meet
            if self.position is None:
                await self._first_contact()
            else:
                await self._read_on()
            self.following = True
            self._last_good = self._clock()
            self._lost_at = None
        try:
            await self.flush()
        except StoreUnavailable as exc:
            log.info(
                "purge log: %d queued purge(s) still wait for Redis (%s)", len(self.outbox), exc
            )

    async def _first_contact(self) -> None:
        self.lineage = await self._lineage()
        self.position = await self._newest()
        # Anything cached so far was cached while no purge could reach us (Redis was down
        # at start-up): it may have missed some. (Usually the memory tier is empty here.)
        self._mark("this process served before it could follow purges")

    async def _read_on(self) -> None:
        assert self.position is not None
        page = await self._read(self.position)
        if page and page[0][0] == self.position:  # still there: nothing can be missing
            while True:
                self._apply_entries(page[1:])
                if len(page) < PAGE:
                    return
                page = await self._read(page[-1][0])
        lineage = await self._lineage()
        changed = lineage != self.lineage
        now = self._clock()
        if changed:
            # Redis lost the log: send again what we purged shortly before we lost it.
            lost_at = self._lost_at if self._lost_at is not None else now
            again = self._recent.since(lost_at - purge_log.REPLAY_WINDOW)
            for purge in again:
                self.outbox.add(purge)
            self.stats.replayed += len(again)
        if purge_log.after_gap(changed, now - self._last_good) == "mark":
            self._mark("deaf too long" if changed else "the log moved past our last entry")
            self.lineage = lineage
            self.position = await self._newest()
            return
        log.warning("purge log: Redis lost it; reading the new one from its start")
        gone, start = self.position, "-"
        while True:
            page = await self._read(start)
            self._apply_entries(page)
            self.lineage = lineage
            if len(page) < PAGE:
                break
            start = "(" + page[-1][0]
        if self.position == gone:  # the new log is empty: something to point at
            self.position = await self._newest()

    def _apply_entries(self, entries: list[tuple[str, Any]]) -> None:
        for entry_id, raw in entries:
            self.position = entry_id
            parsed = purge_log.parse(raw)
            if parsed is None:
                continue
            sender, purge = parsed
            if sender == self.instance or purge.kind == "anchor":
                continue
            self.stats.applied += 1
            if purge.kind == "all":
                self._mark("another instance queued more purges than it could keep")
            elif purge.kind in ("url", "prefix", "tag"):
                self._apply(purge)

    def _mark(self, why: str) -> None:
        marked = self._mark_all()
        if marked:
            self.stats.marked += 1
            log.warning("purge log: %s; %d memory entries will be revalidated", why, marked)

    # --- Redis commands --------------------------------------------------------------

    async def _read(self, start: str) -> list[tuple[str, Any]]:
        page = await self.redis.run(
            "purge-log", lambda: self.redis.client.xrange(self._key, start, "+", count=PAGE)
        )
        return [(_text(entry_id), raw) for entry_id, raw in page or ()]

    async def _newest(self) -> str:
        """The newest entry's id; an anchor entry is added to an empty log to point at."""
        newest = await self.redis.run(
            "purge-log", lambda: self.redis.client.xrevrange(self._key, "+", "-", count=1)
        )
        if newest:
            return _text(newest[0][0])
        return await self._log(ANCHOR)

    async def _lineage(self) -> str:
        token = uuid.uuid4().hex
        found = await self.redis.run(
            "purge-log", lambda: self._lineage_script(keys=[self._lineage_key], args=[token])
        )
        return _text(found)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
