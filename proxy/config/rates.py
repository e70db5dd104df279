"""Rates as configured: `N/second|minute|hour|day` or `N/Ns` (`10/30s`). Pure, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"([0-9]{1,10})/(?:(second|minute|hour|day)|([0-9]{1,8})s)", re.ASCII)
MAX_COUNT = 1_000_000_000
MAX_WINDOW = 366 * 86400  # a year: longer windows are a quota, not a rate


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` requests per `window` seconds; `text` is its canonical spelling."""

    count: int
    window: int
    text: str


def parse_rate(value: object) -> Rate:
    """`5/minute`, `100/hour`, `10/30s` -> Rate; ValueError says what is wrong."""
    if not isinstance(value, str):
        raise ValueError(f"must be a rate such as '100/minute', got {value!r}")
    m = _RATE.fullmatch(value.strip().lower())
    if m is None:
        raise ValueError(
            f"not a rate: {value!r} (use N/second, N/minute, N/hour, N/day or N/<seconds>s, "
            "e.g. '100/minute' or '10/30s')"
        )
    count = int(m.group(1))
    if m.group(2):
        window, text = _UNITS[m.group(2)], f"{count}/{m.group(2)}"
    else:
        window, text = int(m.group(3)), f"{count}/{int(m.group(3))}s"
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"{value!r}: the count must be between 1 and {MAX_COUNT}")
    if not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"{value!r}: the window must be between 1 s and {MAX_WINDOW} s")
    return Rate(count, window, text)
