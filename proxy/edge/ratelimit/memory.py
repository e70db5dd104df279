"""In-process windows: the sliding-window counter per client, in bounded memory.

Clients are kept least recently used first. When a new client arrives, clients idle for
two of the longest windows are dropped from the front (their state counts nothing any
more), and if `max_clients` are still tracked the least recently used one goes too. So a
flood of distinct client addresses costs at most `max_clients` entries per limiter (about
250 bytes each, measured with IPv4 clients and one limit, a few dozen more per extra limit:
~25 MB for the default 100,000),
and memory shrinks back as the flood's clients go idle. Forgetting a client early only
ever gives it a fresh window: nothing an attacker could not get from a new address.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from proxy.edge.ratelimit import window
from proxy.edge.ratelimit.window import hit_one


class MemoryWindows:
    def __init__(
        self,
        windows: Sequence[int],
        limits: Sequence[int],
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.windows = tuple(windows)
        self.limits = tuple(limits)
        self.max_clients = max_clients
        self._clock = clock
        self._states: OrderedDict[str, list[float]] = OrderedDict()
        self._longest = window.longest(self.windows)
        # Floats for hit_one (see there): the common single-limit case.
        self._one = len(self.windows) == 1
        self._w, self._limit = float(self.windows[0]), float(self.limits[0])
        self.evicted = 0  # clients forgotten while still within their windows

    def __len__(self) -> int:
        return len(self._states)

    def hit(self, client: str) -> window.Outcome:
        now = self._clock()
        states = self._states
        state = states.get(client)
        if state is None:
            state = self._add(client, now)
        else:
            states.move_to_end(client)
        if self._one:
            return hit_one(state, self._w, self._limit, now)
        return window.hit(state, self.windows, self.limits, now)

    def _add(self, client: str, now: float) -> list[float]:
        states = self._states
        w = self.windows[self._longest]
        stale_before = int(now / w) - 1  # window index: older than the previous one
        slot = 3 * self._longest
        while states:
            oldest = next(iter(states.values()))
            if oldest[slot] >= stale_before:
                break
            states.popitem(last=False)
        if len(states) >= self.max_clients:
            states.popitem(last=False)
            self.evicted += 1
        state = states[client] = window.new_state(len(self.windows))
        return state
