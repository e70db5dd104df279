"""The Redis side of the revocation list (proxy/edge/revocation.py): the shared set, revoking
into it, and keeping this process's mirror in step with it.

The set is one sorted set shared by every instance (score: expiry in ms by the Redis clock).
A revocation is published on a channel that every process follows, and the mirror is
reloaded from the set at start-up, after every reconnection and every `resync_interval`
seconds, so a missed message costs at most that long. Each reload also writes back what the
mirror knows and the set lacks (revoked while Redis was down, or lost by a Redis that
restarted empty). Entries expire at their ttl everywhere.

    <prefix>{revoked}           ZSET member "t:<digest>" | "j:<digest>", score expiry ms
    <prefix>revoked (channel)   "<member> <expiry ms>" per revocation
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, cast

from redis.asyncio.cluster import RedisCluster

from proxy.cache.memory import StoreUnavailable
from proxy.config.revocation import RevocationSettings
from proxy.shared.reconnect import Backoff
from proxy.shared.redis import SharedRedis
from proxy.tasks import cancel

log = logging.getLogger("cacheproxy.revocation")

_PAGE = 10_000  # members per read when reloading the mirror
_PUSH = 500  # members per write when writing the mirror back

# KEYS[1]: the set. ARGV: member, ttl ms, channel, max entries.
# Returns {expiry ms, entries}, or {-1, entries} when the list is full.
_REVOKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count = redis.call('ZCARD', KEYS[1])
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not known and count >= tonumber(ARGV[4]) then return {-1, count} end
local expiry = now + tonumber(ARGV[2])
if known and tonumber(known) > expiry then expiry = tonumber(known) end
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
local longest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], longest[2])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ' ' .. expiry)
return {expiry, redis.call('ZCARD', KEYS[1])}
"""

# KEYS[1]: the set. ARGV: channel, max entries, then member, expiry ms pairs: what a mirror
# knows and the set lacks (or holds with an earlier expiry). Returns how many were written.
_PUSH_BACK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local written = 0
for i = 3, #ARGV, 2 do
  local member, expiry = ARGV[i], tonumber(ARGV[i + 1])
  local known = redis.call('ZSCORE', KEYS[1], member)
  if expiry > now and (known or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2])) then
    if not known or tonumber(known) < expiry then
      redis.call('ZADD', KEYS[1], expiry, member)
      redis.call('PUBLISH', ARGV[1], member .. ' ' .. expiry)
      written = written + 1
    end
  end
end
if written > 0 then
  local longest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[1], longest[2])
end
return written
"""


class Mirror(Protocol):
    """What the follower keeps in step: the edge's RevocationList."""

    synced: bool

    def add(self, member: str, expiry: float) -> None: ...

    def entries(self) -> list[tuple[str, float]]: ...

    def sweep(self) -> None: ...

    def mark_synced(self) -> None: ...


class RevocationFollower:
    """The shared set in Redis, and the task that mirrors it into this process."""

    def __init__(
        self,
        redis: SharedRedis,
        settings: RevocationSettings,
        mirror: Mirror,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._redis = redis
        self._mirror = mirror
        self._clock = clock
        self.degraded = False  # Redis unreachable: the mirror may be missing entries
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._key = f"{redis.prefix}{{revoked}}"
        self._channel = f"{redis.prefix}revoked"
        self._revoke_script = redis.client.register_script(_REVOKE)
        self._push_script = redis.client.register_script(_PUSH_BACK)

    def health(self) -> dict[str, object]:
        """For /health: `down` until the list was first loaded from Redis."""
        synced = self._mirror.synced
        check: dict[str, object] = {
            "status": "up" if synced else "down",
            "synced": synced,
            "following": not self.degraded,
        }
        if not synced:
            check["error"] = "not loaded from Redis yet: tokens revoked earlier may pass"
        return check

    async def revoke(self, member: str, ttl: float) -> float | None:
        """Revoke `member` for `ttl` seconds in the shared set and the mirror: its expiry
        (epoch seconds), or None when the set is full and does not hold it yet.

        Raises StoreUnavailable after revoking it in this process only.
        """
        try:
            expiry_ms, _ = await self._redis.run(
                "revoke",
                lambda: self._revoke_script(
                    keys=[self._key],
                    args=[
                        member,
                        max(1, int(ttl * 1000)),
                        self._channel,
                        self.settings.max_entries,
                    ],
                ),
            )
        except StoreUnavailable:
            self._mirror.add(member, self._clock() + ttl)  # denying here at least is always safe
            raise
        if int(expiry_ms) < 0:
            return None
        expiry = int(expiry_ms) / 1000
        self._mirror.add(member, expiry)
        return expiry

    # --- following Redis ----------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _follow(self) -> None:
        """Subscribe, then reload (nothing published in between is lost); repeat on errors."""
        client = self._redis.client
        backoff = Backoff()  # grows while attempts fail fast (a refused SUBSCRIBE, say)
        while True:
            pubsub = None
            try:
                if isinstance(client, RedisCluster):
                    await client.initialize()  # its pubsub needs the slot map first
                pubsub = client.pubsub()
                await pubsub.subscribe(self._channel)
                await self.resync()
                next_resync = time.monotonic() + self.settings.resync_interval
                while True:
                    timeout = max(0.0, next_resync - time.monotonic())
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=timeout
                    )
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["data"])
                    if time.monotonic() >= next_resync:
                        await self.resync()
                        next_resync = time.monotonic() + self.settings.resync_interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            await backoff.wait()

    def _on_message(self, data: Any) -> None:
        text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
        member, _, expiry_ms = text.partition(" ")
        try:
            expiry = int(expiry_ms) / 1000
        except ValueError:
            log.warning("ignoring a malformed revocation message")
            return
        self._mirror.add(member, expiry)

    async def resync(self) -> None:
        """Merge the shared set into the mirror (revocations are never taken back early),
        and the mirror into the set."""
        client = self._redis.client
        start = int(self._clock() * 1000)
        offset = 0
        shared: dict[str, int] = {}  # what the set holds: member -> expiry ms
        while True:
            read = partial(
                client.zrangebyscore,
                self._key,
                start,
                "+inf",
                start=offset,
                num=_PAGE,
                withscores=True,
            )
            # withscores=True: (member, score) pairs, whatever redis-py's union says.
            page = cast(
                list[tuple[bytes | str, float]], await self._redis.run("revocation-sync", read)
            )
            for member, score in page:
                text = member.decode("ascii", "replace") if isinstance(member, bytes) else member
                shared[text] = int(score)
                self._mirror.add(text, score / 1000)
            if len(page) < _PAGE:
                break
            offset += _PAGE
        self._mirror.mark_synced()
        await self._write_back(shared)
        self._mirror.sweep()
        if self.degraded:
            log.info("revocation list in sync with Redis again")
        self.degraded = False
        self.last_error = None

    async def _write_back(self, shared: dict[str, int]) -> None:
        """Put in the set what the mirror knows and it lacks: revoked here while Redis was
        down, or lost by a Redis that came back empty. Nothing, when they agree."""
        missing = [
            (member, ms)
            for member, expiry in self._mirror.entries()
            if shared.get(member, -1) < (ms := int(expiry * 1000))
        ]
        for i in range(0, len(missing), _PUSH):
            args: list[str | int] = [self._channel, self.settings.max_entries]
            for member, ms in missing[i : i + _PUSH]:
                args += [member, ms]
            push = partial(self._push_script, keys=[self._key], args=args)
            written = await self._redis.run("revocation-write-back", push)
            if written:
                log.info("revocation list: wrote %d entries Redis did not have", written)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not self.degraded:
            log.warning("revocation list cannot follow Redis (%s); retrying", self.last_error)
        self.degraded = True
