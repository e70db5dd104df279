"""What the cache did for a response (`CacheOutcome`), and how it says so: X-Cache, the
Cache-Status field (RFC 9211, via http-sf) and the metrics' and access log's label.

Call sites describe the outcome as Structured Fields parameters ("hit",
"fwd=miss; stored", "fwd=miss; detail=no-store"); http-sf parses them and serialises
the member, so a malformed one fails at its first use (in the tests), never as a bad
header. Each distinct string is serialised once: a hit only appends its ttl.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import http_sf

CACHE_NAME: Final = "cacheproxy"
# RFC 9651 §3.3.1: an sf-integer has at most 15 digits.
SF_INTEGER_MAX: Final = 999_999_999_999_999


@functools.lru_cache(maxsize=256)
def cache_status(params: str) -> str:
    """Our Cache-Status member with ``params``, e.g. ``cacheproxy;fwd=miss;stored``."""
    member = http_sf.parse(f"{CACHE_NAME};{params}".encode("ascii"), tltype="list")
    return http_sf.ser(member)


@functools.lru_cache(maxsize=256)
def _ttl_prefix(params: str) -> str:
    # ttl is the last parameter, so the serialised member ends with ";ttl=" + integer.
    return f"{cache_status(params)};ttl="


def cache_status_ttl(params: str, ttl: float) -> str:
    """Cache-Status with ``ttl``: seconds of freshness left, negative once stale (RFC 9211
    §2.4), whole seconds towards zero, clamped to what an sf-integer can hold."""
    if not -SF_INTEGER_MAX <= ttl <= SF_INTEGER_MAX:  # also NaN
        ttl = SF_INTEGER_MAX if ttl > 0 else -SF_INTEGER_MAX
    return f"{_ttl_prefix(params)}{int(ttl)}"


# X-Cache's word -> the label the metrics and the access log count the response under.
LABELS: Final = {
    "HIT": "hit",
    "STALE": "stale",
    "MISS": "miss",
    "REVALIDATED": "revalidated",
    "BYPASS": "bypass",
}


@dataclass(frozen=True, slots=True)
class CacheOutcome:
    """What the cache did for one response, made once per distinct outcome (`of`) and read
    by whoever needs it: the response's X-Cache and Cache-Status, the metrics and the log.
    """

    x_cache: str  # HIT, STALE, MISS, REVALIDATED or BYPASS
    params: str  # the Cache-Status parameters, e.g. "fwd=miss; stored"
    label: str  # the metrics' and access log's cache label: "hit", "miss", ...
    status: str  # the serialised Cache-Status member, without a ttl
    # "X-Cache: <x_cache>\r\nCache-Status: <status>;ttl=": a prepared hit adds the digits.
    lines_to_ttl: str

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def of(x_cache: str, params: str) -> CacheOutcome:
        status = cache_status(params)
        return CacheOutcome(
            x_cache,
            params,
            LABELS[x_cache],
            status,
            f"X-Cache: {x_cache}\r\nCache-Status: {status};ttl=",
        )

    def fields(self) -> dict[str, str]:
        """X-Cache and Cache-Status (no ttl: for a response that is not a stored one)."""
        return {"X-Cache": self.x_cache, "Cache-Status": self.status}

    def status_with_ttl(self, ttl: float) -> str:
        return cache_status_ttl(self.params, ttl)


HIT: Final = CacheOutcome.of("HIT", "hit")
MISS: Final = CacheOutcome.of("MISS", "fwd=miss")
BYPASS: Final = CacheOutcome.of("BYPASS", "fwd=bypass")
