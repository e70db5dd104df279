"""The rate-limit response headers: X-RateLimit-* and the IETF httpapi RateLimit fields.

`RateLimit-Policy` lists every limit of the route (`"100/minute";q=100;w=60`): it never
changes, so it is serialised once. `RateLimit` (`"100/minute";r=42;t=7`) and the
X-RateLimit-* trio speak for the limit that matters most to the client right now (see
window.hit). Both are Structured Fields (RFC 9651) written by `http-sf`.

`http_sf.ser` costs about 4 µs, more than the whole memory check may, and a busy client's
`r` changes on every request, so memoising whole fields hits rarely. The field is built
from the library's own pieces instead: the item (`"100/minute"`, a String) serialised
once per limit, and each parameter as the library writes it: its key part (`;r=`) from
`ser_params` once, its Integer from `ser_integer` (memoised for small values). A List of
one Item is exactly the item followed by its parameters in order (RFC 9651 §4.1.1-4.1.3),
so the field is their concatenation; the constructor checks that against `http_sf.ser`,
and the tests check it for any value.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil

import http_sf
from http_sf.bare_item import ser_bare_item
from http_sf.integer import ser_integer
from http_sf.parameters import ser_params
from http_sf.types import ItemType, ParamsType
from multidict import istr

from proxy.config.rates import Rate

Pairs = tuple[tuple[str, str], ...]
# Case-folded once: multidict then skips folding them on every response (half the cost).
LIMIT, REMAINING, RESET = (
    istr("X-RateLimit-Limit"),
    istr("X-RateLimit-Remaining"),
    istr("X-RateLimit-Reset"),
)
POLICY, FIELD = istr("RateLimit-Policy"), istr("RateLimit")
COUNT_HEADERS = (LIMIT, REMAINING, RESET, FIELD)
# The text of every count of seconds up to an hour (about 200 KB, once per process): most
# resets, ages and a hit's ttl (respond/responder.py).
SECONDS_KEPT = 3601
SECONDS_TEXT = tuple(str(n) for n in range(SECONDS_KEPT))
_MEMO_BELOW = 16_384  # values memoised; larger ones are serialised each time (~0.3 µs)


def whole_seconds(wait: float) -> int:
    """A wait as the delay-seconds headers carry: rounded up (past float noise), at least 1."""
    whole = ceil(wait - 1e-6)
    return whole if whole > 1 else 1


class _Param:
    """An Integer parameter: (the Integer, `;<key>=<Integer>`), as http-sf writes them.

    Read `memo.get(n) or make(n)`: a dict lookup on the hot path, no Python call.
    """

    def __init__(self, key: str) -> None:
        self._key_part = ser_params({key: 0})[:-1]  # ";key=", the key serialised and checked
        self.memo: dict[int, tuple[str, str]] = {}

    def make(self, value: int) -> tuple[str, str]:
        text = ser_integer(value)
        made = (text, self._key_part + text)
        if value < _MEMO_BELOW:
            self.memo[value] = made
        return made


def _item(text: str, params: ParamsType) -> ItemType:
    # An Item with parameters as http_sf's `ser` is typed to take it: a literal dict in place
    # would be inferred as dict[str, int], which its invariant ParamsType does not accept.
    return (text, params)


class RateHeaders:
    def __init__(self, rates: Sequence[Rate]) -> None:
        self.policy = http_sf.ser([_item(r.text, {"q": r.count, "w": r.window}) for r in rates])
        self._policy_pair = (POLICY, self.policy)
        self._limit_pairs = [(LIMIT, str(r.count)) for r in rates]
        self.policy_line = f"{POLICY}: {self.policy}\r\n"
        self._items = [ser_bare_item(r.text) for r in rates]
        self._r = _Param("r")
        self._t = _Param("t")
        # Redis failed and requests are let through: what is known without the counts.
        self.policy_only: Pairs = (self._policy_pair,)
        # `lines`: what comes before `remaining` in its two places, for each limit.
        self._t_key = self._t.make(0)[1][:-1]  # ";t="
        # Made a plain str here: an f-string formats an istr through format(), a copy
        # (~2k instructions a line; docs/benchmarks.md).
        self._reset_key = f"\r\n{RESET}: "
        r_key = self._r.make(0)[1][:-1]  # ";r="

        self._line_parts = [
            (
                f"{LIMIT}: {rate.count}\r\n{REMAINING}: ",
                f"{self.policy_line}{FIELD}: {self._items[i]}{r_key}",
            )
            for i, rate in enumerate(rates)
        ]
        for i, rate in enumerate(rates):  # the composition is the library's serialisation
            expected = http_sf.ser([_item(rate.text, {"r": rate.count, "t": rate.window})])
            assert self.field(i, rate.count, rate.window) == expected, expected

    def field(self, which: int, remaining: int, reset: int) -> str:
        """The `RateLimit` field value for limit `which`."""
        return self.get(which, remaining, reset)[4][1]

    def lines(self, which: int, remaining: int, reset: int) -> str:
        """`get`'s fields as they go on the wire, each line ending in CRLF.

        The numbers are written as Python writes them: `remaining` is at most a rate's
        count and `reset` at most two windows (rates.py bounds both), non-negative
        Integers far inside RFC 9651's 15 digits, which http-sf writes as plain digits.
        """
        before_r, before_t = self._line_parts[which]
        r = str(remaining)  # each number written once: an int's text costs more than a line
        t = SECONDS_TEXT[reset] if reset < SECONDS_KEPT else str(reset)
        return f"{before_r}{r}{self._reset_key}{t}\r\n{before_t}{r}{self._t_key}{t}\r\n"

    def get(self, which: int, remaining: int, reset: int) -> Pairs:
        r_text, r_param = self._r.memo.get(remaining) or self._r.make(remaining)
        t_text, t_param = self._t.memo.get(reset) or self._t.make(reset)
        return (
            self._limit_pairs[which],
            (REMAINING, r_text),
            (RESET, t_text),
            self._policy_pair,
            (FIELD, self._items[which] + r_param + t_param),
        )
