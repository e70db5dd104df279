"""One request, start to finish: `Pipeline.handle` (handler.py) calls every stage in order;
routes, the cache stage (lookup, coalescing, refresh) and warming. Imports respond/ and below."""
