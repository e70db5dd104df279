"""Talking to the upstream: the client, the HTTP/1 connection and pool, the per-origin guard, and
the pure protection pieces (gate, breaker, retry, adaptive limit). Imports shared/ and below."""
