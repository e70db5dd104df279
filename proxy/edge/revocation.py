"""Token revocation at the edge: requests bearing a revoked bearer token get a 401.

Revoked tokens are kept as digests (`t:<sha256>`), JWTs may also be revoked by their `jti`
(`j:<sha256>`); neither a token nor a jti is ever stored, logged or answered in clear.

The check runs on every request with `Authorization: Bearer`, cache hits included, so it
never waits on Redis: each process keeps a mirror of the revoked set (digest -> expiry,
epoch seconds). With Redis configured the set lives in one sorted set shared by every
instance (score: expiry in ms by the Redis clock); a revocation is published on a channel
that every process follows, and the mirror is reloaded from the set at start-up, after
every reconnection and every `resync_interval` seconds, so a missed message costs at most
that long. Each reload also writes back what the mirror knows and the set lacks (revoked
while Redis was down, or lost by a Redis that restarted empty). Entries expire at their ttl
everywhere. Without Redis the mirror is the list; with `workers: N` the supervisor keeps a
copy and hands it to each worker it starts (server/supervisor.py), so a restart forgets nothing.

Until the first load from Redis, a process knows only what it was handed:
`before_sync: serve` serves and reports it in /health, `refuse` answers 503 to requests
carrying a bearer token.

    <prefix>{revoked}           ZSET member "t:<digest>" | "j:<digest>", score expiry ms
    <prefix>revoked (channel)   "<member> <expiry ms>" per revocation
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy
from redis.asyncio.cluster import RedisCluster

from proxy.cache.keys import hash_secret
from proxy.cache.memory import StoreUnavailable
from proxy.config.revocation import RevocationSettings
from proxy.http import credentials
from proxy.http.errors import json_error
from proxy.shared.reconnect import Backoff
from proxy.shared.redis import SharedRedis
from proxy.tasks import cancel

log = logging.getLogger("cacheproxy.revocation")

MAX_TTL = 366 * 86400.0
_MAX_TOKEN = 16 * 1024  # longer bearer tokens are not decoded as JWTs
_MAX_JTI = 1024
_PAGE = 10_000  # members per read when reloading the mirror
_PUSH = 500  # members per write when writing the mirror back
SYNC_RETRY_AFTER = 5  # seconds, on the 503 of `before_sync: refuse`

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


class ListFull(Exception):
    pass


bearer_token = credentials.bearer  # `Bearer<TAB>x` is `x`, as origins that split read it


def jwt_id(token: str) -> str | None:
    """The `jti` claim of a JWS compact token, decoded without verification; None if none.

    Safe because revocation only ever denies. Bounded and strict: at most 16 KiB, three
    base64url parts, a JSON object payload, a string jti of at most 1 KiB; anything else
    (JWE, garbage, deep nesting, a non-UTF-8 payload) is simply not a JWT here.
    """
    if len(token) > _MAX_TOKEN or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        raw = base64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_", validate=True)
        claims = orjson.loads(raw)
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI:
        return None
    return jti


def token_member(token: str) -> str:
    return "t:" + hash_secret(token)


def jti_member(jti: str) -> str:
    return "j:" + hash_secret(jti)


class RevocationList:
    """The local mirror and, when configured, its Redis master copy."""

    def __init__(
        self,
        settings: RevocationSettings,
        redis: SharedRedis | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._redis = redis
        self._clock = clock
        self._tokens: dict[str, float] = {}  # "t:<digest>" -> expiry (epoch seconds)
        self._jtis: dict[str, float] = {}  # "j:<digest>" -> expiry
        # Anything to check at all (entries, or bearer requests to refuse until the list is
        # loaded): the hot path reads only this.
        self.any = False
        # Loaded from the master copy at least once (always, without Redis).
        self.synced = redis is None
        self.degraded = False  # Redis unreachable: the mirror may be missing entries
        self.last_error: str | None = None
        self.refused = 0
        self._task: asyncio.Task[None] | None = None
        if redis is not None:
            self._key = f"{redis.prefix}{{revoked}}"
            self._channel = f"{redis.prefix}revoked"
            self._revoke_script = redis.client.register_script(_REVOKE)
            self._push_script = redis.client.register_script(_PUSH_BACK)
        self._update_any()

    # --- the request path ---------------------------------------------------

    def check(self, headers: CIMultiDictProxy[str]) -> web.Response | None:
        """The answer to a request whose bearer token the list refuses; None to go on.

        The pipeline has refused requests with more than one Authorization field already.
        """
        value = headers.get("Authorization")
        if value is None:
            return None
        parsed = credentials.parse(value)
        if parsed is None or parsed.scheme != "bearer" or not parsed.words:
            return None
        if not self.synced and self.settings.before_sync == "refuse":
            return json_error(
                503,
                "revocation_list_unavailable",
                "revoked tokens cannot be checked yet: the list has not been loaded",
                {"Retry-After": str(SYNC_RETRY_AFTER)},
            )
        if len(parsed.words) > 1:
            # Not a token68 (RFC 6750 §2.1): which word an origin takes cannot be told.
            return json_error(
                400, "bad_request", "malformed bearer credentials: the token has spaces in it"
            )
        return self.refusal() if self.revoked(parsed.words[0]) else None

    def revoked(self, token: str) -> bool:
        if self._tokens and self._active(self._tokens, token_member(token)):
            return True
        if self._jtis:
            jti = jwt_id(token)
            if jti is not None and self._active(self._jtis, jti_member(jti)):
                return True
        return False

    def refusal(self) -> web.Response:
        self.refused += 1
        return json_error(
            401,
            "token_revoked",
            "this bearer token has been revoked",
            {"WWW-Authenticate": 'Bearer error="invalid_token", error_description="revoked"'},
        )

    def _active(self, entries: dict[str, float], member: str) -> bool:
        expiry = entries.get(member)
        if expiry is None:
            return False
        if expiry > self._clock():
            return True
        del entries[member]
        self._update_any()
        return False

    def _update_any(self) -> None:
        unsynced_refusal = not self.synced and self.settings.before_sync == "refuse"
        self.any = bool(self._tokens or self._jtis) or unsynced_refusal

    def health(self) -> dict[str, object]:
        """For /health: `down` until the list was first loaded from Redis."""
        check: dict[str, object] = {
            "status": "up" if self.synced else "down",
            "synced": self.synced,
            "following": self._redis is not None and not self.degraded,
        }
        if not self.synced:
            check["error"] = "not loaded from Redis yet: tokens revoked earlier may pass"
        return check

    # --- changes ------------------------------------------------------------

    async def revoke(self, member: str, ttl: float) -> float:
        """Revoke `member` for `ttl` seconds; returns its expiry (epoch seconds).

        Raises ListFull, or StoreUnavailable after revoking it in this process only.
        """
        if self._redis is None:
            self.sweep()
            if member not in self._entries(member) and self.count() >= self.settings.max_entries:
                raise ListFull
            expiry = self._clock() + ttl
            self._add(member, expiry)
            return expiry
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
            self._add(member, self._clock() + ttl)  # denying here at least is always safe
            raise
        if int(expiry_ms) < 0:
            raise ListFull
        expiry = int(expiry_ms) / 1000
        self._add(member, expiry)
        return expiry

    def count(self) -> int:
        self.sweep()
        return len(self._tokens) + len(self._jtis)

    def sweep(self) -> None:
        now = self._clock()
        for entries in (self._tokens, self._jtis):
            for member in [m for m, expiry in entries.items() if expiry <= now]:
                del entries[member]
        self._update_any()

    def entries(self) -> list[tuple[str, float]]:
        """Every live (member, expiry): what a worker started later is handed."""
        self.sweep()
        return [*self._tokens.items(), *self._jtis.items()]

    def load(self, entries: Iterable[tuple[str, float]]) -> None:
        """Add what another process knows (revocations are never taken back early)."""
        for member, expiry in entries:
            self._add(member, expiry)

    def _entries(self, member: str) -> dict[str, float]:
        return self._tokens if member.startswith("t:") else self._jtis

    def _add(self, member: str, expiry: float) -> None:
        if not member.startswith(("t:", "j:")) or expiry <= self._clock():
            return
        entries = self._entries(member)
        if entries.get(member, 0.0) < expiry:
            entries[member] = expiry
        self._update_any()

    # --- following Redis ----------------------------------------------------

    async def start(self) -> None:
        if self._redis is not None and self._task is None:
            self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _follow(self) -> None:
        """Subscribe, then reload (nothing published in between is lost); repeat on errors."""
        assert self._redis is not None
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
        self._add(member, expiry)

    async def resync(self) -> None:
        """Merge the shared set into the mirror (revocations are never taken back early),
        and the mirror into the set."""
        assert self._redis is not None
        client = self._redis.client
        start = int(self._clock() * 1000)
        offset = 0
        shared: dict[str, int] = {}  # what the set holds: member -> expiry ms
        while True:
            page = await self._redis.run(
                "revocation-sync",
                lambda offset=offset: client.zrangebyscore(
                    self._key, start, "+inf", start=offset, num=_PAGE, withscores=True
                ),
            )
            for member, score in page:
                text = member.decode("ascii", "replace") if isinstance(member, bytes) else member
                shared[text] = int(score)
                self._add(text, score / 1000)
            if len(page) < _PAGE:
                break
            offset += _PAGE
        if not self.synced:
            self.synced = True
            self._update_any()
        await self._write_back(shared)
        self.sweep()
        if self.degraded:
            log.info("revocation list in sync with Redis again")
        self.degraded = False
        self.last_error = None

    async def _write_back(self, shared: dict[str, int]) -> None:
        """Put in the set what the mirror knows and it lacks: revoked here while Redis was
        down, or lost by a Redis that came back empty. Nothing, when they agree."""
        assert self._redis is not None
        missing = [
            (member, ms)
            for member, expiry in self.entries()
            if shared.get(member, -1) < (ms := int(expiry * 1000))
        ]
        for i in range(0, len(missing), _PUSH):
            args: list[str | int] = [self._channel, self.settings.max_entries]
            for member, ms in missing[i : i + _PUSH]:
                args += [member, ms]
            written = await self._redis.run(
                "revocation-write-back",
                lambda args=args: self._push_script(keys=[self._key], args=args),
            )
            if written:
                log.info("revocation list: wrote %d entries Redis did not have", written)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not self.degraded:
            log.warning("revocation list cannot follow Redis (%s); retrying", self.last_error)
        self.degraded = True


# --- admin API ---------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_routes(revocations: RevocationList) -> list[tuple[str, str, Handler]]:
    """`POST /tokens/revoke` and `GET /tokens/revoked/count` (the admin app guards them)."""

    async def revoke(request: web.Request) -> web.StreamResponse:
        parsed = parse_revocation(await request.read())
        if isinstance(parsed, str):
            return json_error(400, "bad_request", parsed)
        member, ttl = parsed
        try:
            expiry = await revocations.revoke(member, ttl)
        except ListFull:
            limit = revocations.settings.max_entries
            return json_error(507, "list_full", f"the revocation list holds {limit} entries")
        except StoreUnavailable:
            return json_error(
                503,
                "store_unavailable",
                "revoked on this instance only: Redis is unavailable, retry to share it",
            )
        log.info("revoked %s until %.0f", member[:10], expiry)
        body = {"revoked": True, "expires_at": int(expiry), "count": revocations.count()}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def count(_: web.Request) -> web.StreamResponse:
        body = {"count": revocations.count()}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    return [("POST", "/tokens/revoke", revoke), ("GET", "/tokens/revoked/count", count)]


def parse_revocation(body: bytes) -> tuple[str, float] | str:
    """(member, ttl) of a `POST /tokens/revoke` body, or what is wrong with it."""
    try:
        spec = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "body must be JSON"
    problem = _check_spec(spec)
    if problem:
        return problem
    member = token_member(spec["token"]) if "token" in spec else jti_member(spec["jti"])
    return member, float(spec["ttl"])


def _check_spec(spec: object) -> str | None:
    if not isinstance(spec, dict):
        return 'give {"token": ..., "ttl": seconds} or {"jti": ..., "ttl": seconds}'
    kinds = [k for k in ("token", "jti") if k in spec]
    extra = set(spec) - {"token", "jti", "ttl"}
    if len(kinds) != 1 or extra:
        return 'give exactly one of "token", "jti", and "ttl" (seconds)'
    value = spec[kinds[0]]
    bound = _MAX_TOKEN if kinds[0] == "token" else _MAX_JTI
    if not isinstance(value, str) or not value.strip() or len(value) > bound:
        return f'"{kinds[0]}" must be a non-empty string of at most {bound} characters'
    if kinds[0] == "token" and any(c.isspace() for c in value):
        return '"token" must be the token alone, without "Bearer " or spaces'
    ttl = spec.get("ttl")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL:
        return f'"ttl" must be a number of seconds, more than 0 and at most {int(MAX_TTL)}'
    return None
