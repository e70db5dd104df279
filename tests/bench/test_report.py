"""The benchmark suite's figures: medians over rounds, ratios, goal verdicts, the table."""

from __future__ import annotations

import math

from bench.report import (
    Row,
    Run,
    Side,
    compare,
    cores_allow,
    cores_busy,
    every_goal_met,
    goal,
    markdown,
    ratio,
)


def side(name: str, *runs: tuple[int, float, float]) -> Side:
    """(requests, elapsed seconds, cpu seconds) per round; p50/p99 from the request count."""
    return Side(name, [Run(n, t, n / 1e6, n / 1e5, cpu=cpu) for n, t, cpu in runs])


def test_medians_and_range_over_rounds() -> None:
    s = side("a", (1000, 1.0, 0.05), (3000, 1.0, 0.06), (2000, 1.0, 0.04))
    assert s.rps == 2000
    assert s.rps_range == (1000, 3000)
    assert s.p50 == 2000 / 1e6
    # CPU per request is each round's own (50, 20, 20 µs), then the median.
    assert s.cpu_us == 20


def test_missing_figures_stay_missing() -> None:
    assert math.isnan(Side("empty").rps)
    assert Run(0, 1.0, 0, 0, cpu=1.0).cpu_us is None
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))
    assert goal("g", (math.nan, 1.0, True)) == "g: n/a"


def test_goals_need_every_check() -> None:
    assert goal("g", (1.2, 1.2, True), (0.83, 0.83, False)) == "g: met"
    assert goal("g", (1.3, 1.2, True), (0.9, 0.83, False)) == "g: NOT met"
    assert goal("g", (1.1, 1.2, True)) == "g: NOT met"


def test_ratios_are_the_proxy_over_the_yardstick() -> None:
    proxy = side("proxy", (3000, 1.0, 0.03))  # 10 µs a request
    yard = side("yard", (2000, 1.0, 0.04))  # 20 µs
    assert compare(proxy, yard) == "proxy 1.50x req/s, 0.50x CPU"


def test_table_rows() -> None:
    rows = [
        Row.of("1 hits", side("proxy", (2000, 1.0, 0.1), (4000, 1.0, 0.2)), "vs", "g: met"),
        Row("6 memory", "store", vs="4 KB/entry"),
    ]
    rows[0].errors = 3
    lines = markdown(rows).splitlines()
    assert lines[2] == (
        "| 1 hits | proxy (3 errors) | 3,000 (2,000-4,000) | 3.00 | 30.00 | 50.0 | vs | g: met |"
    )
    assert lines[3] == "| 6 memory | store |  |  |  |  | 4 KB/entry |  |"
    assert rows[1].as_json()["rps"] is None


def test_a_run_meets_its_goals_only_when_each_is_measured_and_met() -> None:
    met, missed, unmeasured = "≤1.5x: met", "≤3x: NOT met", "≥1.8x: n/a"
    assert every_goal_met([met, "", met])
    assert not every_goal_met([met, missed])
    assert not every_goal_met([met, unmeasured])
    assert not every_goal_met(["", ""])


def test_cores_busy_adds_the_load_generators_cpu_to_the_sides() -> None:
    # 50,000 req/s at 15 µs of the server's and 5 µs of the generator's: one core's worth.
    s = Side("two", [Run(50_000, 1.0, 0, 0, cpu=0.75, loader_cpu=0.25)])
    assert math.isclose(cores_busy(s), 1.0)
    assert math.isnan(cores_busy(Side("without a generator's time", [Run(10, 1.0, 0, 0, cpu=0.1)])))


def test_cores_allow_caps_a_scaling_figure_at_what_the_shared_cores_hold() -> None:
    # One process: 80,000 req/s. Two, at 12 µs each and 8 µs of the generator's per
    # request: 2 cores hold at most 100,000 req/s, 1.25x, whatever the two could do alone.
    one = Side("one", [Run(80_000, 1.0, 0, 0, cpu=0.96)])
    two = Side("two", [Run(90_000, 1.0, 0, 0, cpu=1.08, loader_cpu=0.72)])
    assert math.isclose(cores_allow(two, one, 2), 1.25)
    assert math.isnan(cores_allow(Side("without a generator's time"), one, 2))
