"""What authenticating shared entries (cache.key_secret) costs on an L2 hit, per entry.

    python -m bench.entry_auth

Decodes the same entry, as read from Redis, with and without the HMAC tag check, for a
few body sizes (a typical head: eight fields), and prints microseconds per decode and the
difference. An L2 hit also pays a Redis round trip (~100 µs on loopback), not counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from multidict import CIMultiDict

from proxy.cache import entry_format
from proxy.cache.entry import Entry
from proxy.cache.policy import CacheRules

HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "public, max-age=60",
    "ETag": '"abc123"',
    "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
    "Date": "Mon, 01 Jan 2024 00:00:00 GMT",
    "Server": "origin",
    "Via": "1.1 cacheproxy",
    "Content-Length": "0",
}


def entry(size: int) -> Entry:
    headers = CIMultiDict({**HEADERS, "Content-Length": str(size)})
    return Entry.build(
        status=200,
        reason="OK",
        headers=headers,
        body=b"x" * size,
        request_headers=CIMultiDict(),
        request_time=1e9,
        response_time=1e9,
        rules=CacheRules(ttl=60),
        primary="api.example.com/quotes/AAPL?",
        url_key="api.example.com/quotes/AAPL?",
        path="/quotes/AAPL",
    )


def per_call(fn: Callable[..., object], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - started) / n)
    return best * 1e6


def main() -> None:
    key = entry_format.auth_key(b"s" * 32)
    print("body bytes   plain µs   authenticated µs   difference µs")
    for size in (1024, 10 * 1024, 100 * 1024, 1024 * 1024):
        e = entry(size)
        plain, tagged = entry_format.encode(e), entry_format.encode(e, auth=key)
        n = max(20, 20_000 // (1 + size // 4096))
        a = per_call(lambda plain=plain: entry_format.decode(plain), n)
        b = per_call(lambda tagged=tagged: entry_format.decode(tagged, key), n)
        print(f"{size:>10}   {a:8.2f}   {b:16.2f}   {b - a:13.2f}")


if __name__ == "__main__":
    main()
