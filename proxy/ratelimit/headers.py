"""The rate-limit response headers: X-RateLimit-* and the IETF httpapi RateLimit fields.

`RateLimit-Policy` lists every limit of the route (`"100/minute";q=100;w=60`): it never
changes, so it is serialised once. `RateLimit` (`"100/minute";r=42;t=7`) and the
X-RateLimit-* trio speak for the limit that matters most to the client right now (see
window.hit). Both are Structured Fields (RFC 9651) written by `http-sf`; its serialiser
costs about 4 µs, so the header tuples are memoised per (limit, remaining, reset).
"""

from __future__ import annotations

from collections.abc import Sequence

import http_sf

from proxy.ratelimit.rates import Rate

Pairs = tuple[tuple[str, str], ...]
_MEMO_SIZE = 4096  # cleared when full: (remaining, reset) pairs repeat across clients


def whole_seconds(wait: float) -> int:
    """A wait as the delay-seconds headers carry: rounded up, at least 1."""
    whole = int(wait)
    return max(1, whole + 1 if wait - whole > 1e-6 else whole)


class RateHeaders:
    def __init__(self, rates: Sequence[Rate]) -> None:
        self._rates = tuple(rates)
        self.policy = http_sf.ser([(r.text, {"q": r.count, "w": r.window}) for r in rates])
        self._memo: dict[tuple[int, int, int], Pairs] = {}
        # Redis failed and requests are let through: what is known without the counts.
        self.policy_only: Pairs = (("RateLimit-Policy", self.policy),)

    def get(self, which: int, remaining: int, reset: int) -> Pairs:
        key = (which, remaining, reset)
        pairs = self._memo.get(key)
        if pairs is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            rate = self._rates[which]
            pairs = self._memo[key] = (
                ("X-RateLimit-Limit", str(rate.count)),
                ("X-RateLimit-Remaining", str(remaining)),
                ("X-RateLimit-Reset", str(reset)),
                ("RateLimit-Policy", self.policy),
                ("RateLimit", http_sf.ser([(rate.text, {"r": remaining, "t": reset})])),
            )
        return pairs
