"""Warming's pure core: decaying popularity, pacing, rates, refresh-ahead."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.pipeline.warming import (
    Pacer,
    Popularity,
    Warming,
    refresh_ahead_at,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_counts_halve_every_half_life() -> None:
    clock = Clock()
    p = Popularity(top=10, half_life=60, clock=clock)
    for _ in range(8):
        p.touch("a")
    assert p.count("a") == pytest.approx(8)
    clock.now += 60
    assert p.count("a") == pytest.approx(4)
    clock.now += 120
    assert p.count("a") == pytest.approx(1)


def test_the_top_keys_are_popular_and_recent_traffic_outweighs_old() -> None:
    clock = Clock()
    p = Popularity(top=2, half_life=10, rank_every=0, clock=clock)
    for key, hits in (("old", 50), ("a", 5), ("b", 3), ("c", 1)):
        for _ in range(hits):
            p.touch(key)
        if key == "old":
            clock.now += 100  # ten half-lives: 50 old hits are worth 0.05 now
    assert p.popular() == ["a", "b"]
    assert p.is_popular("a") and p.is_popular("b")
    assert not p.is_popular("old") and not p.is_popular("c") and not p.is_popular("never")


def test_with_fewer_keys_than_top_every_key_seen_is_popular() -> None:
    p = Popularity(top=100, half_life=60, clock=Clock())
    p.touch("only")
    assert p.is_popular("only") and not p.is_popular("other")


def test_top_zero_makes_nothing_popular() -> None:
    p = Popularity(top=0, half_life=60, clock=Clock())
    p.touch("a")
    assert not p.is_popular("a")


def test_the_ranking_is_recomputed_only_every_so_often() -> None:
    clock = Clock()
    p = Popularity(top=1, half_life=60, rank_every=1.0, clock=clock)
    p.touch("a")
    p.touch("a")
    p.touch("c")
    assert p.is_popular("a") and not p.is_popular("c")
    p.touch("b")
    p.touch("b")
    p.touch("b")
    # Until the next ranking the threshold is a's: both pass it.
    assert p.is_popular("b") and p.is_popular("a")
    clock.now += 1
    assert p.is_popular("b") and not p.is_popular("a")


def test_memory_is_bounded_and_the_busiest_keys_survive() -> None:
    clock = Clock()
    p = Popularity(top=5, half_life=60, capacity=100, clock=clock)
    for _ in range(20):
        p.touch("hot")
    for i in range(10_000):
        p.touch(f"cold-{i}")
    assert len(p) <= 200
    assert p.popular()[0] == "hot"


def test_counts_survive_rescaling_after_a_long_time() -> None:
    clock = Clock()
    p = Popularity(top=5, half_life=1, clock=clock)
    for _ in range(4):
        p.touch("a")
    clock.now += 39
    p.touch("b")  # weight 2**39: close to the rescaling point
    clock.now += 2
    p.touch("b")  # 2**41: rescaled here
    assert p.count("b") == pytest.approx(1 + 0.25)
    assert p.count("a") == pytest.approx(4 * 2.0**-41)


def test_the_pacer_spaces_requests_by_one_over_the_rate() -> None:
    clock = Clock()
    pacer = Pacer(rate=10, clock=clock)
    assert pacer.try_take()
    assert not pacer.try_take()
    assert pacer.wait_time() == pytest.approx(0.1)
    clock.now += 0.05
    assert not pacer.try_take()
    clock.now += 0.05
    assert pacer.try_take()
    clock.now += 10  # idle time does not save up a burst
    assert pacer.try_take() and not pacer.try_take()


@given(st.lists(st.floats(0, 0.5), min_size=1, max_size=200))
def test_the_pacer_never_exceeds_its_rate_in_any_window(gaps: list[float]) -> None:
    clock = Clock()
    pacer = Pacer(rate=5, clock=clock)
    sent = []
    for gap in gaps:
        clock.now += gap
        if pacer.try_take():
            sent.append(clock.now)
    for i, start in enumerate(sent):
        in_window = [t for t in sent[i:] if t < start + 1.0 - 1e-9]
        assert len(in_window) <= 5


def test_refresh_ahead_is_due_for_popular_entries_past_the_share() -> None:
    clock = Clock()
    warming = Warming(refresh_ahead=0.8, top=1, half_life=60, rate=10, clock=clock)
    assert refresh_ahead_at(10, 0.8) == 8
    assert warming.popularity is not None
    warming.popularity.touch("k")
    assert not warming.due_on_hit("k", age=7.9, lifetime=10)
    assert warming.due_on_hit("k", age=8.0, lifetime=10)
    assert not warming.due_on_hit("other", age=9, lifetime=10)
    assert not warming.due_on_hit("k", age=0, lifetime=0)  # never fresh: nothing ahead
