"""Shared windows in Redis: the same sliding-window counter, one atomic script per check.

One hash per limiter and client holds every limit's three numbers (fields `<W>i`, `<W>p`,
`<W>c` for the window of W seconds), so all limits of one check are one key, one slot,
one EVALSHA. The script reads the clock with TIME, so instances with skewed clocks still
share windows, and replies allowed / which limit / remaining / wait in the same round
trip. The key expires two of its longest windows after its last admitted request.

Keys: `<prefix>rl:{<limiter>:<client digest>}`; a client is a digest, never a token or
header value in clear.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.edge.ratelimit import window
from proxy.shared.redis import SharedRedis

# KEYS[1]: the client's hash. ARGV[1]: now in seconds, or '' for the Redis clock (tests
# pass a fake clock); then W, N for each limit. Mirrors window.hit exactly.
HIT = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local eps = 1e-9
local n = (#ARGV - 1) / 2
local fields = {}
for i = 1, n do
  local w = ARGV[2 * i]
  fields[3 * i - 2] = w .. 'i'
  fields[3 * i - 1] = w .. 'p'
  fields[3 * i] = w .. 'c'
end
local v = redis.call('HMGET', KEYS[1], unpack(fields))
local idx, prev, curr = {}, {}, {}
local allowed = true
local longest = 0
for i = 1, n do
  local w = tonumber(ARGV[2 * i])
  local limit = tonumber(ARGV[2 * i + 1])
  if w > longest then longest = w end
  local k = math.floor(now / w)
  local last = tonumber(v[3 * i - 2])
  local p = tonumber(v[3 * i - 1]) or 0
  local c = tonumber(v[3 * i]) or 0
  if last ~= k then
    if last == k - 1 then p = c else p = 0 end
    c = 0
  end
  idx[i], prev[i], curr[i] = k, p, c
  if p * (1 - (now / w - k)) + c > limit - 1 + eps then allowed = false end
end

local function until_at_most(p, c, f, w, target)
  if p * (1 - f) + c <= target + eps then return 0 end
  if c <= target + eps then return (1 - (target - c) / p - f) * w end
  return (2 - f - target / c) * w
end

local which, remaining, wait = 0, -1, 0
local writes = {}
for i = 1, n do
  local w = tonumber(ARGV[2 * i])
  local limit = tonumber(ARGV[2 * i + 1])
  local f = now / w - idx[i]
  local p = prev[i]
  if allowed then
    local c = curr[i] + 1
    local left = math.floor(limit - (p * (1 - f) + c) + eps)
    if left < 0 then left = 0 end
    local u = until_at_most(p, c, f, w, limit - left - 1)
    if remaining < 0 or left < remaining or (left == remaining and u > wait) then
      which, remaining, wait = i - 1, left, u
    end
    local m = #writes
    writes[m + 1], writes[m + 2] = fields[3 * i - 2], idx[i]
    writes[m + 3], writes[m + 4] = fields[3 * i - 1], p
    writes[m + 5], writes[m + 6] = fields[3 * i], c
  else
    local c = curr[i]
    if p * (1 - f) + c > limit - 1 + eps then
      local u = until_at_most(p, c, f, w, limit - 1)
      if remaining < 0 or u > wait then which, remaining, wait = i - 1, 0, u end
    end
  end
end
if allowed then
  redis.call('HSET', KEYS[1], unpack(writes))
  redis.call('PEXPIRE', KEYS[1], 2 * longest * 1000)
end
return {allowed and 1 or 0, which, remaining, math.ceil(wait * 1000000)}
"""


class RedisWindows:
    """Async `hit`; raises StoreUnavailable (from the shared guard) when Redis fails."""

    def __init__(
        self, redis: SharedRedis, limiter: str, windows: Sequence[int], limits: Sequence[int]
    ) -> None:
        self._run = redis.run
        self._script = redis.client.register_script(HIT)
        self._key_prefix = f"{redis.prefix}rl:{{{limiter}:"
        self._args: list[int | str] = [""]
        for w, n in zip(windows, limits, strict=True):
            self._args += [w, n]

    def key(self, client: str) -> str:
        return f"{self._key_prefix}{client}}}"

    async def hit(self, client: str, now: float | None = None) -> window.Outcome:
        """`client` is already a digest. `now` (seconds) replaces Redis's clock in tests."""
        keys = [self.key(client)]
        args = self._args if now is None else [repr(now), *self._args[1:]]
        allowed, which, remaining, wait_us = await self._run(
            "ratelimit", lambda: self._script(keys=keys, args=args)
        )
        return bool(allowed), int(which), int(remaining), int(wait_us) / 1e6
