"""Times, headers and rules the policy tests share."""

from __future__ import annotations

from email.utils import formatdate

from multidict import CIMultiDict

from proxy.cache.policy.directives import CacheControl, parse_cache_control
from proxy.cache.policy.rules import CacheRules

NOW = 1_700_000_000.0  # a whole second, so HTTP-dates round-trip exactly


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


# NOW - 100 as email.utils reads it, but not an HTTP-date: "UTC" is not "GMT".
NEAR_MISS_DATE = http_date(NOW - 100).replace("GMT", "UTC")


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def cc(value: str) -> CacheControl:
    return parse_cache_control([value])


DEFAULT = CacheRules()
TTL = CacheRules(ttl=30)
AUTH = ("Authorization", "Bearer t")
