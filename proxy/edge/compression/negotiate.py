"""Accept-Encoding negotiation (RFC 9110 §12.5.3): which content coding a client gets, and
whether it takes one a response already has. Pure: strings in, a coding name out.

Both run on cache hits, so parsed headers and results are memoised (bounded, FIFO).
"""

from __future__ import annotations

import re

__all__ = ["CODING_ALIASES", "is_acceptable", "negotiate"]

_QVALUE_RE = re.compile(r"0(?:\.[0-9]*)?|1(?:\.0*)?")  # RFC 9110 §12.4.2, extra digits tolerated
CODING_ALIASES = {"x-gzip": "gzip"}  # RFC 9110 §8.4.1.3

# Header values longer than this are parsed but not cached, which bounds cache memory.
_CACHEABLE_LEN = 256
_CACHE_SIZE = 512

_parsed_cache: dict[str, dict[str, float]] = {}
_negotiated_cache: dict[tuple[str, tuple[str, ...]], str | None] = {}


def _parse(accept_encoding: str) -> dict[str, float]:
    """coding -> q. Entries with a malformed q are dropped: never guess acceptability."""
    prefs = _parsed_cache.get(accept_encoding)
    if prefs is not None:
        return prefs
    prefs = {}
    for element in accept_encoding.split(","):
        coding, _, params = element.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q: float | None = 1.0
        for param in params.split(";") if params else ():
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                q = float(value) if _QVALUE_RE.fullmatch(value) else None
        if q is None:
            continue
        coding = CODING_ALIASES.get(coding, coding)
        # A coding listed twice keeps its lowest q: a refusal (q=0) is never overridden.
        prefs[coding] = min(q, prefs.get(coding, q))
    if len(accept_encoding) <= _CACHEABLE_LEN:
        if len(_parsed_cache) >= _CACHE_SIZE:
            del _parsed_cache[next(iter(_parsed_cache))]  # FIFO eviction, O(1)
        _parsed_cache[accept_encoding] = prefs
    return prefs


def negotiate(accept_encoding: str | None, offered: tuple[str, ...]) -> str | None:
    """Pick a content coding per RFC 9110 §12.5.3, or None for identity.

    Highest q wins; ties go to the earliest in *offered* (the server's preference).
    `*` covers codings not listed. An explicitly listed `identity` with a higher q than
    every offered coding means no compression. A missing header means no compression
    (like nginx), although the RFC would allow any coding. Never returns deflate.
    """
    if accept_encoding is None:
        return None
    key = (accept_encoding, offered)
    try:
        return _negotiated_cache[key]
    except KeyError:
        pass
    prefs = _parse(accept_encoding)
    star = prefs.get("*", 0.0)
    best: str | None = None
    best_q = 0.0
    for coding in offered:
        q = prefs.get(coding, star)
        if q > best_q and coding != "deflate":
            best, best_q = coding, q
    if best is not None and prefs.get("identity", 0.0) > best_q:
        best = None
    if len(accept_encoding) <= _CACHEABLE_LEN:
        if len(_negotiated_cache) >= _CACHE_SIZE:
            del _negotiated_cache[next(iter(_negotiated_cache))]
        _negotiated_cache[key] = best
    return best


def is_acceptable(accept_encoding: str | None, coding: str) -> bool:
    """Whether a response already encoded with *coding* may be relayed to this client as is.

    Unlike `negotiate` this ignores preference: any q > 0 will do. A missing header
    accepts identity only (conservative, as in `negotiate`).
    """
    coding = coding.strip().lower()
    coding = CODING_ALIASES.get(coding, coding)
    if accept_encoding is None:
        return coding in ("", "identity")
    prefs = _parse(accept_encoding)
    if coding in ("", "identity"):
        # Identity is acceptable unless refused explicitly or by `*;q=0` (RFC 9110 §12.5.3).
        return prefs.get("identity", prefs.get("*", 1.0)) > 0
    return prefs.get(coding, prefs.get("*", 0.0)) > 0
