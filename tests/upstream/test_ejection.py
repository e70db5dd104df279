"""Ejection and health-check state, with a clock passed in."""

from __future__ import annotations

import pytest

from proxy.upstream.ejection import Checked, Outlier, max_out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_take_a_target_out_and_a_success_resets_the_row() -> None:
    clock = Clock()
    o = Outlier(3, 30.0, 300.0, clock)
    assert not o.record(True) and not o.record(True)
    assert not o.record(False)  # a success: the row starts again
    assert not o.record(True) and not o.record(True)
    assert o.record(True)
    assert o.out(clock.now) and o.out_for(clock.now) == 30.0 and o.ejections == 1
    # Requests sent before it went out, failing or not, change nothing: its return decides.
    assert not o.record(True)
    o.record(False)
    assert o.out_for(clock.now) == 30.0 and o.probation
    clock.now += 30.0
    assert not o.out(clock.now)


def test_back_in_one_failure_takes_it_out_again_for_longer_up_to_max_time() -> None:
    clock = Clock()
    o = Outlier(5, 10.0, 25.0, clock)
    for _ in range(5):
        o.record(True)
    durations = [o.out_for(clock.now)]
    for _ in range(3):
        clock.now = o.out_until  # back, on probation
        assert o.record(True)  # the first failure is enough
        durations.append(o.out_for(clock.now))
    assert durations == [10.0, 20.0, 25.0, 25.0]
    assert o.ejections == 4


def test_a_success_on_return_ends_probation() -> None:
    clock = Clock()
    o = Outlier(2, 10.0, 100.0, clock)
    o.record(True)
    o.record(True)
    clock.now = o.out_until
    o.record(False)
    assert not o.record(True)  # a failure now starts a row, as for any target
    assert o.record(True)


def test_the_ejection_count_is_forgotten_while_it_stays_in() -> None:
    clock = Clock()
    o = Outlier(1, 10.0, 100.0, clock)
    o.record(True)
    clock.now = o.out_until
    o.record(True)  # second time: 20 s
    assert o.out_for(clock.now) == 20.0
    clock.now = o.out_until
    o.record(False)
    clock.now += 25.0  # two base_times back in: both ejections forgotten
    assert o.record(True)
    assert o.out_for(clock.now) == 10.0


def test_health_checks_take_out_and_bring_back_by_thresholds() -> None:
    c = Checked(unhealthy_after=3, healthy_after=2)
    assert c.up
    assert not c.record(False) and not c.record(False)
    assert not c.record(True)  # a pass breaks the row of failures
    assert [c.record(False) for _ in range(3)] == [False, False, True]
    assert not c.up
    assert not c.record(True)
    assert not c.record(False)
    assert [c.record(True) for _ in range(2)] == [False, True]
    assert c.up


@pytest.mark.parametrize(
    ("targets", "percent", "expected"),
    [(1, 50, 0), (2, 50, 1), (3, 50, 1), (4, 50, 2), (10, 10, 1), (2, 100, 1), (5, 0, 1)],
)
def test_how_many_targets_may_be_out(targets: int, percent: int, expected: int) -> None:
    assert max_out(targets, percent) == expected
