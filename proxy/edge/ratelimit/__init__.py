"""Rate limiting: the sliding window (pure), client identity, memory and Redis backends, the
limiter and its response headers."""
