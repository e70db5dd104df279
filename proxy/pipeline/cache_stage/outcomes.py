"""What the cache stage says it did, one `CacheOutcome` per way a response comes about."""

from __future__ import annotations

from typing import Final

from proxy.cache.status import HIT, MISS, CacheOutcome

__all__ = ["HIT", "MISS"]

HIT_SHARED: Final = CacheOutcome.of("HIT", "hit; detail=shared")
STALE_WHILE_REVALIDATE: Final = CacheOutcome.of("STALE", "hit; detail=stale-while-revalidate")
# Soft-purged, served once more while its revalidation runs (policy.soft_purge_grace).
SOFT_PURGED: Final = CacheOutcome.of("STALE", "hit; detail=soft-purged")
STALE_IF_ERROR: Final = CacheOutcome.of("STALE", "fwd=stale; detail=stale-if-error")
# An open circuit means the request was never sent (RFC 9211: no `fwd`).
CIRCUIT_OPEN: Final = CacheOutcome.of("STALE", "hit; detail=circuit-open")
REVALIDATED: Final = CacheOutcome.of("REVALIDATED", "fwd=stale; fwd-status=304")
COLLAPSED: Final = CacheOutcome.of("MISS", "fwd=miss; collapsed")
COLLAPSED_SHARED: Final = CacheOutcome.of("MISS", "fwd=miss; collapsed; detail=shared")
STORED: Final = CacheOutcome.of("MISS", "fwd=miss; stored")
ONLY_IF_CACHED: Final = CacheOutcome.of("MISS", "fwd=miss; detail=only-if-cached")
CREDENTIALS: Final = CacheOutcome.of("BYPASS", "fwd=bypass; detail=credentials")


def not_stored(why: str) -> CacheOutcome:
    """A miss whose response was not stored, `why` being policy.storability's reason."""
    return CacheOutcome.of("MISS", f"fwd=miss; detail={why}")
