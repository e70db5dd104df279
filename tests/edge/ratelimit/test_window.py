"""The sliding-window counter on a fake clock: exact counts, no boundary burst, and the
documented worst-case bounds checked against an exact log of the admitted requests."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.edge.ratelimit.memory import MemoryWindows
from proxy.edge.ratelimit.window import hit, hit_one, new_state, until_at_most

W = 60


def one(limit: int, window: int = W) -> tuple[list[float], tuple[int], tuple[int]]:
    return new_state(1), (window,), (limit,)


def test_exactly_n_then_refused_with_the_wait_until_one_more_fits() -> None:
    state, windows, limits = one(5)
    t = 1000 * W + 10.0  # 10 s into a window
    seen = [hit(state, windows, limits, t) for _ in range(5)]
    assert [s[0] for s in seen] == [True] * 5
    assert [s[2] for s in seen] == [4, 3, 2, 1, 0]
    allowed, which, remaining, wait = hit(state, windows, limits, t)
    assert (allowed, which, remaining) == (False, 0, 0)
    # The 5 count until the window rolls (50 s), then decay: one fits after W/5 more.
    assert abs(wait - (50 + 12)) < 1e-6
    assert not hit(state, windows, limits, t + wait - 0.01)[0]
    assert hit(state, windows, limits, t + wait + 1e-6)[0]


def test_refused_requests_count_nowhere() -> None:
    state, windows, limits = one(2)
    t = 5.0
    hit(state, windows, limits, t)
    hit(state, windows, limits, t)
    for i in range(100):
        assert not hit(state, windows, limits, t + i * 0.1)[0]
    assert state[1:] == [0, 2]  # previous 0, current 2: the refusals left no trace


def test_no_burst_at_the_window_boundary() -> None:
    state, windows, limits = one(10)
    end = 7 * W - 0.001
    assert all(hit(state, windows, limits, end)[0] for _ in range(10))
    # A fixed window would let 10 more through right now; the sliding one lets none...
    assert not hit(state, windows, limits, 7 * W)[0]
    assert not hit(state, windows, limits, 7 * W + 0.5)[0]
    # ...and then one per W/10 as the previous window's count slides out.
    assert hit(state, windows, limits, 7 * W + W / 10 + 1e-6)[0]
    assert not hit(state, windows, limits, 7 * W + W / 10 + 0.01)[0]
    assert hit(state, windows, limits, 7 * W + 2 * W / 10 + 1e-6)[0]


def test_idle_for_two_windows_starts_afresh() -> None:
    state, windows, limits = one(3)
    for _ in range(3):
        hit(state, windows, limits, 100.0)
    assert hit(state, windows, limits, 100.0 + 2 * W)[2] == 2


def test_several_limits_apply_together_and_the_tightest_is_reported() -> None:
    state = new_state(2)
    windows, limits = (1, 60), (2, 3)
    t = 60.0  # the start of both windows
    assert hit(state, windows, limits, t)[:3] == (True, 0, 1)  # 1 left in the second
    assert hit(state, windows, limits, t + 0.1)[:3] == (True, 0, 0)
    allowed, which, remaining, wait = hit(state, windows, limits, t + 0.2)
    assert (allowed, which, remaining) == (False, 0, 0)  # the per-second limit refuses
    assert 0 < wait < 1.9
    allowed, which, _, wait = hit(state, windows, limits, t + 2.0)
    assert allowed and which == 1  # third of the minute: none left there
    allowed, which, _, wait = hit(state, windows, limits, t + 4.0)
    assert (allowed, which) == (False, 1)
    assert wait > 50  # the minute's three slide out only after it ends


def test_on_a_tie_the_limit_that_frees_up_last_is_reported() -> None:
    state = new_state(2)
    # 1 left per second and 1 per minute: the minute's comes back later.
    allowed, which, remaining, wait = hit(state, (1, 60), (2, 2), 60.0)
    assert (allowed, which, remaining) == (True, 1, 1)
    assert wait > 1


def test_until_at_most_within_the_window_and_after_the_roll() -> None:
    assert until_at_most(0, 3, 0.5, 60, 3) == 0.0
    # previous 10 at f=0.5 weighs 5; to weigh 4 it needs f=0.6: 6 s more.
    assert abs(until_at_most(10, 0, 0.5, 60, 4) - 6.0) < 1e-9
    # current 4 > target 3: the window must roll (30 s), then 4 * (1 - g) <= 3, g=1/4.
    assert abs(until_at_most(0, 4, 0.5, 60, 3) - 45.0) < 1e-9


arrivals = st.lists(st.floats(0, 5 * W, allow_nan=False), min_size=1, max_size=200).map(sorted)


@settings(max_examples=300, deadline=None)
@given(arrivals, st.integers(1, 20))
def test_worst_case_bounds_hold_against_an_exact_log(times: list[float], limit: int) -> None:
    state, windows, limits = one(limit)
    admitted = [t for t in times if hit(state, windows, limits, t)[0]]
    for t in admitted:
        # No fixed window ever admits more than N...
        k = int(t // W)
        assert sum(1 for u in admitted if int(u // W) == k) <= limit
        # ...and no true sliding window of W seconds reaches 2N (module docstring).
        assert sum(1 for u in admitted if t - W < u <= t) < 2 * limit


@settings(max_examples=300, deadline=None)
@given(arrivals, st.integers(1, 20), st.integers(1, 3))
def test_remaining_and_waits_tell_the_truth(times: list[float], limit: int, w: int) -> None:
    window = w * 10
    state, windows, limits = one(limit, window)
    for t in times:
        before = copy.copy(state)
        allowed, _, remaining, wait = hit(state, windows, limits, t)
        probe = copy.copy(state)
        if allowed:
            # `remaining` more fit right now, not one more...
            assert all(hit(probe, windows, limits, t)[0] for _ in range(remaining))
            assert not hit(probe, windows, limits, t)[0]
            # ...and after `wait`, one more than that.
            later = copy.copy(state)
            more = 0
            while hit(later, windows, limits, t + wait + 1e-6)[0]:
                more += 1
            assert more == remaining + 1
        else:
            assert state == before or state[0] != before[0]  # only a window roll
            assert remaining == 0 and wait > 0
            assert hit(probe, windows, limits, t + wait + 1e-6)[0]
            if wait > 1e-3:
                assert not hit(copy.copy(state), windows, limits, t + wait - 1e-3)[0]


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_memory_windows_never_hold_more_than_max_clients() -> None:
    clock = FakeClock(1000.0)
    memory = MemoryWindows([W], [5], max_clients=100, clock=clock)
    for i in range(10_000):  # a flood of distinct addresses
        memory.hit(f"10.0.{i // 256}.{i % 256}")
    assert len(memory) == 100
    assert memory.evicted == 10_000 - 100


def test_memory_windows_drop_idle_clients_and_keep_active_ones() -> None:
    clock = FakeClock(1000.0)
    memory = MemoryWindows([1, W], [5, 50], max_clients=1000, clock=clock)
    for i in range(500):
        memory.hit(f"idle-{i}")
    clock.now += W
    for _ in range(3):
        memory.hit("active")
    clock.now += W + 1  # the idle ones are now two windows old; "active" one
    memory.hit("newcomer")
    assert len(memory) == 2
    assert memory.evicted == 0  # dropped as idle, not evicted while counting
    # The active client kept its count (3 in its previous minute, weighted).
    assert memory.hit("active")[2] < 49


def test_memory_windows_least_recently_used_goes_first() -> None:
    clock = FakeClock(10.0)
    memory = MemoryWindows([W], [3], max_clients=2, clock=clock)
    memory.hit("a")
    memory.hit("b")
    memory.hit("a")  # a is now the most recent
    memory.hit("c")  # evicts b
    assert memory.hit("a")[2] == 0  # a's count survived: 3rd request
    assert memory.hit("b")[2] == 2  # b starts afresh


@settings(max_examples=300, deadline=None)
@given(arrivals, st.integers(1, 20), st.integers(1, 3))
def test_the_one_limit_path_decides_as_the_general_one(
    times: list[float], limit: int, w: int
) -> None:
    """hit_one (every request of a single-limit memory limiter) writes until_at_most out:
    it must say what the loop over several limits says when only the first one binds."""
    window = w * 10
    single = new_state(1)
    pair = new_state(2)
    for t in times:
        alone = hit_one(single, window, limit, t)
        both = hit(pair, (window, 10 * window), (limit, 1_000_000), t)
        assert alone == both
        assert single == pair[:3]
