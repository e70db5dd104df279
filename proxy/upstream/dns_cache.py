"""How long an upstream host's addresses are kept, and what a connection does with them: pure
decisions, a clock passed in (resolve.py does the asking).

As NGINX's `resolver` and Envoy's `respect_dns_ttl`: an answer lives for its records' TTL,
within `upstream.dns`'s floor and ceiling. Past it, the old addresses are still used while a
fresh answer is sought in the background, so no request waits on the name servers but the
first; a failed lookup keeps the old addresses (a DNS outage must not take the upstream down
with it) and is asked again `negative_ttl` later. A name with no addresses yet fails fast for
`negative_ttl`, rather than send every request's connection to the name servers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

Address = TypeVar("Address")


class Use(Enum):
    FRESH = "fresh"  # use the addresses
    STALE = "stale"  # use them, and look the name up again in the background
    WAIT = "wait"  # none to use: wait for a lookup
    FAILED = "failed"  # the last lookup failed, and it is too soon to ask again


@dataclass(frozen=True, slots=True)
class Answer(Generic[Address]):
    addresses: tuple[Address, ...]  # empty: the lookup failed and there were none before
    expires: float  # clock time from which the name is asked again
    error: str | None = None  # why the last lookup failed, if it did


def keep_for(ttl: float | None, min_ttl: float, max_ttl: float) -> float:
    """Seconds an answer with records' `ttl` is kept; None (unknown): the ceiling."""
    if ttl is None:
        return max_ttl
    return min(max(ttl, min_ttl), max_ttl)


def answered(
    addresses: tuple[Address, ...], ttl: float | None, now: float, min_ttl: float, max_ttl: float
) -> Answer[Address]:
    return Answer(addresses, now + keep_for(ttl, min_ttl, max_ttl))


def literal(addresses: tuple[Address, ...]) -> Answer[Address]:
    """An IP address: nothing to look up, ever."""
    return Answer(addresses, math.inf)


def failed(
    previous: Answer[Address] | None, error: str, now: float, negative_ttl: float
) -> Answer[Address]:
    """A lookup failed: the addresses known before stay, until a lookup `negative_ttl` later."""
    addresses = () if previous is None else previous.addresses
    return Answer(addresses, now + negative_ttl, error)


def use(answer: Answer[Address] | None, now: float) -> Use:
    if answer is None:
        return Use.WAIT
    if now < answer.expires:
        return Use.FRESH if answer.addresses else Use.FAILED
    return Use.STALE if answer.addresses else Use.WAIT


__all__ = ["Answer", "Use", "answered", "failed", "keep_for", "literal", "use"]
