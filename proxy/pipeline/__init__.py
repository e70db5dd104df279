"""One request, start to finish: `Pipeline.handle` (handler.py) calls every stage in order;
routes, the cache stage (cache_stage/: lookup, coalescing, fill, refresh), the upstream
request made for a client's (upstream_fetch.py) and warming. Imports respond/ and below."""
