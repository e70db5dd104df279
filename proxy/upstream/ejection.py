"""Whether a target is in its upstream's balancing: pure state over a clock passed in.

`Outlier` is passive health, as Envoy's outlier detection: `consecutive` failures in a row
take a target out for `base` seconds, n x `base` the n-th time (at most `max_time`); each
`base` seconds it then stays in forgets one of those times. Back in, it is on probation:
its first verdict decides, and a failure takes it out again at once, so a target that
keeps dying gets one request per return, not `consecutive` of them.

`Checked` is active health: `unhealthy` failed checks in a row take a target out, `healthy`
passed ones bring it back. A target starts in: a proxy starting while its checks have not
run yet must not refuse everything.

`max_out` is how many of a group's targets may be out before the group balances across all
of them as if none were (Envoy's panic mode): a verdict gone wrong, or every target failing
at once, must not pile every request onto the last one standing or refuse them all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Outlier:
    __slots__ = (
        "_clock",
        "base",
        "consecutive",
        "ejections",
        "in_row",
        "max_time",
        "out_until",
        "probation",
        "times",
    )

    def __init__(
        self,
        consecutive: int,
        base: float,
        max_time: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consecutive = consecutive
        self.base = base
        self.max_time = max_time
        self._clock = clock
        self.in_row = 0  # failures in a row
        self.out_until = -math.inf
        self.times = 0  # ejections not yet forgotten: the next lasts (times + 1) x base
        self.ejections = 0  # ever
        self.probation = False

    def out(self, now: float) -> bool:
        return now < self.out_until

    def record(self, failed: bool) -> bool:
        """One attempt's verdict; True when it took the target out."""
        now = self._clock()
        if now < self.out_until:
            return False  # a request sent before it went out: its return decides
        if not failed:
            self.in_row = 0
            self.probation = False
            return False
        self.in_row += 1
        if self.in_row < self.consecutive and not self.probation:
            return False
        if self.ejections:  # forget one ejection per `base` seconds spent back in
            back_for = now - self.out_until
            self.times = max(0, self.times - int(back_for // self.base))
        self.times += 1
        self.out_until = now + min(self.base * self.times, self.max_time)
        self.ejections += 1
        self.in_row = 0
        self.probation = True
        return True

    def out_for(self, now: float) -> float:
        """Seconds until it is back; 0 when in."""
        return max(0.0, self.out_until - now)


class Checked:
    __slots__ = ("healthy_after", "in_row", "unhealthy_after", "up")

    def __init__(self, unhealthy_after: int, healthy_after: int) -> None:
        self.unhealthy_after = unhealthy_after
        self.healthy_after = healthy_after
        self.up = True
        self.in_row = 0  # checks in a row that disagree with `up`

    def record(self, passed: bool) -> bool:
        """One check's result; True when it changed `up`."""
        if passed is self.up:
            self.in_row = 0
            return False
        self.in_row += 1
        if self.in_row < (self.healthy_after if passed else self.unhealthy_after):
            return False
        self.up = passed
        self.in_row = 0
        return True


def max_out(targets: int, percent: int) -> int:
    """How many of `targets` may be out at once: `percent` of them, at least one of two or
    more, never all."""
    if targets < 2:
        return 0
    return min(targets - 1, max(1, targets * percent // 100))
