"""The Cache-Status field (RFC 9211) this cache adds to every response, via http-sf.

Call sites describe the outcome as Structured Fields parameters ("hit",
"fwd=miss; stored", "fwd=miss; detail=no-store"); http-sf parses them and serialises
the member, so a malformed one fails at its first use (in the tests), never as a bad
header. Each distinct string is serialised once: a hit only appends its ttl.
"""

from __future__ import annotations

import functools
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
