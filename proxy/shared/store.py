"""RedisStore: the shared L2 tier. Entries as bytes (entry_format), expiring by native TTL.

Key layout, with P the configured prefix and {h} a hash of the URL key, so that every key
of one URL lives in one Redis Cluster slot and one script can touch them all::

    P{h}:g          purge generation of the URL: a store checks it did not move meanwhile
    P{h}:i          SET of the entry keys stored under the URL (for purge by URL)
    P{h}:k:<p>      the entry of primary key p, when the origin sent no Vary
    P{h}:r:<p>      when it did: the Vary field names that select the variant...
    P{h}:v:<p+vary> ...and one entry per variant
    <entry key>:s   an entry as a soft purge left it: "<when, epoch seconds>|<entry>", for
                    as long as the entry had left; a store under the entry key removes it
    P{h}:l:<p>      a fetch lock: one instance fetches a cold key for all (coalesce: global)
    P{paths}        ZSET (all scores 0) of "path NUL h": purge by path prefix is a range
    P{paths}:exp    the same members scored by expiry, to drop them when their URL expires
    P{t:<tag>}      SET of "h NUL entry key" per tag

A lookup is one MGET: the entry key, the key aside, the Vary record and the generation
and, when the URL's record was read before, the variant the record named then.

A purge never scans the keyspace: URL purges read one index set; prefix purges one
lexicographic range; tag purges one set. A soft purge finds its entries the same way and
moves each aside (`:s`) with when it happened; a lookup reads both keys in one round trip
and makes an entry found aside stale as of then (Entry.soft_purged). Moved, not marked in a
key beside it: an instance of an older version, which reads only the entry key, finds
nothing there and fetches, rather than serving the entry as fresh.

Every call goes through `run` (the caller's guard: timeout, breaker, error counting), which
raises StoreUnavailable on failure.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from proxy.cache import entry_format, policy
from proxy.cache.entry import Entry
from proxy.cache.entry_format import EntryFormatError, Unauthenticated

T = TypeVar("T")

_RECORD = b"\x89CPV"  # a Vary record: this magic, then the field names, NUL-separated
_INDEX_KEEP_MS = 86_400_000  # purge generations outlive any fetch that could race them
# An entry's bytes beyond its body: heads, keys, lists, and up to three encoded variants,
# each no larger than the body in practice. Longer values are not even decoded.
_ENCODED_BEYOND_BODY = 64 * 1024
_VARIES_KEPT = 4096  # records whose Vary names a store remembers (RedisStore._varies)

# KEYS: entry, index, generation, the entry as a soft purge left it, [vary record]; ARGV:
# blob, ttl ms, expected generation, [record]. Stores only when no purge of the URL happened
# since the lookup; what it stores came after any soft purge, so the entry left aside goes.
_PUT = """
local gen = redis.call('GET', KEYS[3]) or '0'
if gen ~= ARGV[3] then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('DEL', KEYS[4])
redis.call('SADD', KEYS[2], KEYS[1])
if KEYS[5] then
  local left = redis.call('PTTL', KEYS[5])
  redis.call('SET', KEYS[5], ARGV[4], 'PX', math.max(ttl, left))
  redis.call('SADD', KEYS[2], KEYS[5])
end
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""

# The purges' common parts. KEYS: index, generation, entry keys (all of the index's when
# none are given); ARGV[1]: how long the generation is kept (ms). The generation moves on, so
# a store that read the old one before the purge is refused.
_PURGED_KEYS = """
local keys = {}
if #KEYS > 2 then
  for i = 3, #KEYS do keys[#keys + 1] = KEYS[i] end
else
  keys = redis.call('SMEMBERS', KEYS[1])
end
"""
_NEXT_GENERATION = """
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
"""

# Removes the entries; returns how many (not Vary records) went.
_PURGE = f"""{_PURGED_KEYS}local removed = 0
for _, key in ipairs(keys) do
  local gone = redis.call('DEL', key) + redis.call('DEL', key .. ':s')
  if gone > 0 and not string.find(key, ':r:', 1, true) then
    removed = removed + 1
  end
  redis.call('SREM', KEYS[1], key)
end
if #KEYS == 2 then redis.call('DEL', KEYS[1]) end
{_NEXT_GENERATION}return removed
"""

# ARGV[2]: when (epoch seconds). A soft purge: each entry is moved aside with when, for as
# long as it had left (one already aside stays as it was: stale since the first). Returns how
# many entries were moved.
_SOFT_PURGE = f"""{_PURGED_KEYS}local marked = 0
for _, key in ipairs(keys) do
  if not string.find(key, ':r:', 1, true) then
    local left = redis.call('PTTL', key)
    if left > 0 then
      local blob = redis.call('GET', key)
      redis.call('SET', key .. ':s', ARGV[2] .. '|' .. blob, 'PX', left)
      redis.call('DEL', key)
      marked = marked + 1
    end
  end
end
{_NEXT_GENERATION}return marked
"""

# KEYS: paths, paths:exp; ARGV: member, expiry (ms since the epoch).
_INDEX_PATH = """
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[1])
"""

# KEYS: paths, paths:exp; ARGV: now (ms), batch. Forgets paths whose entries expired.
_EXPIRE_PATHS = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(gone) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZREM', KEYS[2], member)
end
return #gone
"""


# KEYS: lock; ARGV: owner. Deletes the lock only if it is still ours.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Run(Protocol):
    def __call__(self, op: str, call: Callable[[], Awaitable[T]]) -> Awaitable[T]: ...


class Mget(Protocol):
    def __call__(self, op: str, keys: Sequence[str]) -> Awaitable[list[bytes | None]]: ...


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


class RedisStore:
    """Async; every method may raise StoreUnavailable (from `run`)."""

    def __init__(
        self,
        client: Any,
        run: Run,
        prefix: str,
        secret: bytes | None = None,
        mget: Mget | None = None,
    ) -> None:
        """`secret` (cache.key_secret): entries are written and read authenticated.
        `mget`: how lookups read (SharedRedis.mget); by default `client.mget` under `run`."""
        self._client = client
        self._run = run
        self._mget: Mget = mget or (lambda op, keys: run(op, lambda: client.mget(keys)))
        self._auth = None if secret is None else entry_format.auth_key(secret)
        self._p = prefix
        self._paths = f"{prefix}{{paths}}"
        self._put = client.register_script(_PUT)
        self._purge = client.register_script(_PURGE)
        self._soft_purge = client.register_script(_SOFT_PURGE)
        self._index_path = client.register_script(_INDEX_PATH)
        self._expire_paths = client.register_script(_EXPIRE_PATHS)
        self._unlock = client.register_script(_UNLOCK)
        # The Vary field names last read from each URL's record (by record key), so that a
        # lookup reads the record and the variant it names in one call; when the record says
        # otherwise, the variant is read in a second one as before.
        self._varies: dict[str, tuple[str, ...]] = {}
        self.corrupt = 0  # values that were not entries we can read: counted misses
        self.unauthenticated = 0  # entries without our tag (with a secret): counted misses
        self.oversize = 0  # entries over the route's max_entry_size: counted misses

    # --- keys ---------------------------------------------------------------

    def _url(self, url_key: str) -> tuple[str, str]:
        h = _digest(url_key)
        return h, f"{self._p}{{{h}}}"

    @staticmethod
    def _entry_key(base: str, primary: str, vary: bool, vary_values: tuple[str, ...]) -> str:
        if not vary:
            return f"{base}:k:{_digest(primary)}"
        return f"{base}:v:{_digest(primary + chr(0) + chr(31).join(vary_values))}"

    # --- lookup and store ---------------------------------------------------

    async def get(
        self,
        primary: str,
        url_key: str,
        request_headers: policy.Headers,
        max_size: int = 2**62,
    ) -> tuple[Entry | None, bytes, bool]:
        """The stored entry for this request, the URL's purge generation (for `put`), and
        whether the entry, soft-purged, is in its grace (Entry.soft_purged). An entry
        whose body, or any encoded variant, is over `max_size` bytes is a miss."""
        h, base = self._url(url_key)
        p = h if primary == url_key else _digest(primary)  # most keys are their URL's
        plain_key = f"{base}:k:{p}"
        record_key = f"{base}:r:{p}"
        keys = [plain_key, plain_key + ":s", record_key, f"{base}:g"]
        known = self._varies.get(record_key)
        if known is not None:  # the variant's keys in the same call, as the record says
            key = self._entry_key(base, primary, True, policy.vary_key(known, request_headers))
            keys += (key, key + ":s")
        found = await self._mget("get", keys)
        plain, aside, record, generation = found[0], found[1], found[2], found[3]
        generation = generation or b"0"
        blob = plain
        if record is not None:
            if not record.startswith(_RECORD):
                self.corrupt += 1
                return None, generation, False
            split = record[len(_RECORD) :].decode("ascii", "replace").split("\0")
            names = tuple(n for n in split if n)
            if names == known:
                blob, aside = found[4], found[5]
            else:
                self._learn(record_key, names)
                values = policy.vary_key(names, request_headers)
                key = self._entry_key(base, primary, True, values)
                blob, aside = await self._mget("get", (key, key + ":s"))
        elif known is not None:
            del self._varies[record_key]
        purged_at = None
        if blob is None and aside is not None:  # soft-purged: "<when>|<entry>"
            when, _, blob = aside.partition(b"|")
            purged_at = _moment(when)
        if blob is None:
            return None, generation, False
        if len(blob) > 4 * max_size + _ENCODED_BEYOND_BODY:
            self.oversize += 1
            return None, generation, False
        try:
            entry = entry_format.decode(blob, self._auth)
        except Unauthenticated:
            self.unauthenticated += 1
            return None, generation, False
        except EntryFormatError:
            self.corrupt += 1
            return None, generation, False
        if len(entry.body) > max_size or (
            entry.variants and any(len(b) > max_size for _, b in entry.variants.values())
        ):
            self.oversize += 1
            return None, generation, False
        if entry.primary != primary or not entry.matches(request_headers):
            return None, generation, False  # a hash collision or a stale variant: never served
        grace = False if purged_at is None else entry.soft_purged(purged_at)
        return entry, generation, grace

    def _learn(self, record_key: str, names: tuple[str, ...]) -> None:
        varies = self._varies
        if len(varies) >= _VARIES_KEPT:
            varies.clear()
        varies[record_key] = names

    async def put(
        self, entry: Entry, ttl: float, generation: bytes, variants: Iterable[str] = ()
    ) -> bool:
        """Store for `ttl` seconds, unless the URL was purged since `generation` was read."""
        h, base = self._url(entry.url_key)
        ttl_ms = max(1000, int(ttl * 1000))
        varies = bool(entry.vary)
        entry_key = self._entry_key(base, entry.primary, varies, entry.vary_values)
        keys = [entry_key, f"{base}:i", f"{base}:g", entry_key + ":s"]
        blob = entry_format.encode(entry, variants, self._auth)
        args: list[bytes | int] = [blob, ttl_ms, generation]
        if varies:
            keys.append(f"{base}:r:{_digest(entry.primary)}")
            args.append(_RECORD + "\0".join(entry.vary).encode())
        stored = await self._run("put", lambda: self._put(keys=keys, args=args))
        if not stored:
            return False
        member = entry.path.encode("utf-8", "surrogateescape") + b"\0" + h.encode()
        expires_ms = int((entry.response_time + ttl) * 1000)
        await self._run(
            "put",
            lambda: self._index_path(
                keys=[self._paths, f"{self._paths}:exp"], args=[member, expires_ms]
            ),
        )
        if entry.tags:
            await self._run("put", functools.partial(self._tag, entry.tags, h, keys[0], ttl_ms))
        return True

    async def add_variants(self, entry: Entry, variants: Iterable[str]) -> bool:
        """Rewrite a stored entry with encoded variants made since, so other instances
        need not make them again. Only while it is still stored: a purge wins (XX)."""
        _, base = self._url(entry.url_key)
        key = self._entry_key(base, entry.primary, bool(entry.vary), entry.vary_values)
        blob = entry_format.encode(entry, variants, self._auth)
        done = await self._run("put", lambda: self._client.set(key, blob, xx=True, keepttl=True))
        return bool(done)

    async def _tag(self, tags: tuple[str, ...], h: str, entry_key: str, ttl_ms: int) -> None:
        # Every tag in one round trip: an origin may list hundreds (Surrogate-Key is read by
        # default), and one call each would spend the request's Redis time (redis.timeout)
        # on them, leaving the rest unindexed: a purge by one of those would miss the entry.
        member = f"{h}\0{entry_key}"
        async with self._client.pipeline(transaction=False) as pipe:
            for tag in tags:
                tag_key = f"{self._p}{{t:{_digest(tag)}}}"
                pipe.sadd(tag_key, member)
                pipe.pexpire(tag_key, ttl_ms, gt=True)
                pipe.pexpire(tag_key, ttl_ms, nx=True)
            await pipe.execute()

    # --- fetch locks (coalescing across instances) ---------------------------

    def lock_key(self, primary: str, url_key: str) -> str:
        return f"{self._url(url_key)[1]}:l:{_digest(primary)}"

    async def lock(self, key: str, owner: str, ttl: float) -> bool:
        """Take the fetch lock for `ttl` seconds (it expires if its owner dies)."""
        px = max(1, int(ttl * 1000))
        return bool(await self._run("lock", lambda: self._client.set(key, owner, nx=True, px=px)))

    async def locked(self, key: str) -> bool:
        return bool(await self._run("lock", lambda: self._client.exists(key)))

    async def unlock(self, key: str, owner: str) -> None:
        await self._run("lock", lambda: self._unlock(keys=[key], args=[owner]))

    # --- purge ----------------------------------------------------------------

    # A purge removes entries; a soft one (`soft_at`: when, in epoch seconds) moves them
    # aside. Each returns how many entries it removed or moved.

    async def purge_url(self, url_key: str, soft_at: float | None = None) -> int:
        _, base = self._url(url_key)
        return await self._purge_keys(base, [], soft_at)

    async def _purge_keys(self, base: str, keys: list[str], soft_at: float | None) -> int:
        all_keys = [f"{base}:i", f"{base}:g", *keys]
        if soft_at is None:
            call = functools.partial(self._purge, keys=all_keys, args=[_INDEX_KEEP_MS])
        else:
            args = [_INDEX_KEEP_MS, repr(soft_at)]
            call = functools.partial(self._soft_purge, keys=all_keys, args=args)
        return int(await self._run("purge", call))

    async def purge_prefix(
        self, path_prefix: str, soft_at: float | None = None, batch: int = 1000
    ) -> int:
        start = b"[" + path_prefix.encode("utf-8", "surrogateescape")
        end = start + b"\xff"
        done = 0
        while True:
            page = functools.partial(
                self._client.zrangebylex, self._paths, start, end, start=0, num=batch
            )
            members = await self._run("purge", page)
            if not members:
                return done
            for h in {m.rpartition(b"\0")[2].decode() for m in members}:
                done += await self._purge_keys(f"{self._p}{{{h}}}", [], soft_at)
            if soft_at is not None:
                # The entries stay, and so do their paths: read on past the last one.
                start = b"(" + members[-1]
                if len(members) < batch:
                    return done
                continue
            await self._run("purge", functools.partial(self._drop_paths, members))

    async def _drop_paths(self, members: list[bytes]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.zrem(self._paths, *members)
            pipe.zrem(f"{self._paths}:exp", *members)
            await pipe.execute()

    async def purge_tag(self, tag: str, soft_at: float | None = None) -> int:
        tag_key = f"{self._p}{{t:{_digest(tag)}}}"
        members = await self._run("purge", lambda: self._client.smembers(tag_key))
        by_url: dict[str, list[str]] = {}
        for member in members:
            h, _, key = member.decode().partition("\0")
            by_url.setdefault(h, []).append(key)
        done = 0
        for h, keys in by_url.items():
            done += await self._purge_keys(f"{self._p}{{{h}}}", keys, soft_at)
        if soft_at is None:  # a soft purge keeps its entries, tagged as they were
            await self._run("purge", lambda: self._client.delete(tag_key))
        return done

    async def expire_paths(self, now: float, batch: int = 1000) -> int:
        """Forget path-index members whose entries have expired; call it now and then."""
        gone = await self._run(
            "expire",
            lambda: self._expire_paths(
                keys=[self._paths, f"{self._paths}:exp"], args=[int(now * 1000), batch]
            ),
        )
        return int(gone)


def _moment(when: bytes) -> float:
    """When a soft purge happened, by the purging instance's clock. Never later than now by
    ours (a clock ahead of ours must not leave the entry fresh a while longer); a time we
    cannot read counts as now."""
    now = time.time()
    try:
        at = float(when)
    except ValueError:
        return now
    return min(at, now) if math.isfinite(at) else now
