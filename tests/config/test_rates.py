"""Rate parsing: every accepted spelling, every refusal with a reason, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config.rates import MAX_COUNT, MAX_WINDOW, Rate, parse_rate


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("5/second", Rate(5, 1, "5/second")),
        ("100/minute", Rate(100, 60, "100/minute")),
        ("20/hour", Rate(20, 3600, "20/hour")),
        ("1000/day", Rate(1000, 86400, "1000/day")),
        ("10/30s", Rate(10, 30, "10/30s")),
        ("  7/Minute ", Rate(7, 60, "7/minute")),
        ("3/007s", Rate(3, 7, "3/7s")),
    ],
)
def test_accepted_spellings(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5",
        "5/",
        "/minute",
        "5/minutes",
        "5 / minute",
        "5/m",
        "-1/second",
        "0/second",
        "5/0s",
        "5/30",
        "5/s",
        "1.5/second",
        "5/second/2",
        "\uff15/second",
        "5/1e3s",
    ],
)
def test_refused_spellings_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"rate|count|window"):
        parse_rate(text)


def test_bounds() -> None:
    assert parse_rate(f"{MAX_COUNT}/{MAX_WINDOW}s") == Rate(
        MAX_COUNT, MAX_WINDOW, f"{MAX_COUNT}/{MAX_WINDOW}s"
    )
    with pytest.raises(ValueError, match="count"):
        parse_rate(f"{MAX_COUNT + 1}/second")
    with pytest.raises(ValueError, match="window"):
        parse_rate(f"1/{MAX_WINDOW + 1}s")


def test_not_a_string() -> None:
    for value in (5, None, 1.5, ["5/second"]):
        with pytest.raises(ValueError, match="rate"):
            parse_rate(value)


units = st.sampled_from([("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400)])


@given(st.integers(1, MAX_COUNT), units)
def test_unit_rates_round_trip(count: int, unit: tuple[str, int]) -> None:
    rate = parse_rate(f"{count}/{unit[0]}")
    assert (rate.count, rate.window) == (count, unit[1])
    assert parse_rate(rate.text) == rate


@given(st.integers(1, MAX_COUNT), st.integers(1, MAX_WINDOW))
def test_second_rates_round_trip(count: int, seconds: int) -> None:
    rate = parse_rate(f"{count}/{seconds}s")
    assert (rate.count, rate.window) == (count, seconds)
    assert parse_rate(rate.text) == rate


@given(st.text(max_size=30))
def test_any_text_parses_canonically_or_is_refused_with_a_value_error(text: str) -> None:
    try:
        rate = parse_rate(text)
    except ValueError:
        return
    assert 1 <= rate.count <= MAX_COUNT and 1 <= rate.window <= MAX_WINDOW
    assert parse_rate(rate.text) == rate
