"""The cache stage: a GET or HEAD on a caching route, from lookup to response.

- stage.py: `CacheStage.serve`, what is stored and whether it may be served (a `Lookup`,
  lookup.py, carries what the stage knows about the request);
- coalescing.py: one upstream request per key at a time, across instances when asked;
- fill.py: the upstream request, and the response stored, revalidated, kept as a part or
  relayed;
- partial.py: GET misses of routes that keep parts of ranges (`range_requests: parts`);
- refresh.py: refreshes no client waits for (stale-while-revalidate, refresh-ahead,
  warming).

Decisions come from proxy/cache/policy (pure); these modules only do the I/O around them.
"""

from proxy.pipeline.cache_stage.lookup import Lookup
from proxy.pipeline.cache_stage.stage import CacheStage

__all__ = ["CacheStage", "Lookup"]
