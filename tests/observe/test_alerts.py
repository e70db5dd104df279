"""Alert messages say their values as their thresholds are written: percentages, never a
value that reads as equal to the threshold it broke (proxy/observe/alerts.py, pure)."""

from __future__ import annotations

import pytest

from proxy.config.alerts import AlertSettings
from proxy.observe.alerts import evaluate, percent


@pytest.mark.parametrize(
    ("value", "threshold", "shown"),
    [
        (0.167, 0.02, "16.7%"),
        (0.0201, 0.02, "2.01%"),  # "2.0%" would read as the 2% it broke
        (0.02001, 0.02, "2.001%"),
        (0.42, 0.5, "42.0%"),
        (0.4999, 0.5, "49.99%"),
    ],
)
def test_a_value_never_reads_as_its_threshold(value: float, threshold: float, shown: str) -> None:
    assert percent(value, threshold) == shown


def window(**figures: object) -> dict[str, object]:
    base = {
        "hits": 30, "misses": 70, "hit_rate": 0.3, "requests": 100, "error_rate": 0.0201,
        "response_times": {"p99_ms": 10.0},
    }  # fmt: skip
    return {**base, **figures}


def test_the_messages_use_percentages_as_the_settings_are_written() -> None:
    settings = AlertSettings(min_hit_rate=0.5, max_error_rate=0.02)
    messages = [a.message for a in evaluate(settings, window())]
    assert messages == ["hit rate 30.0% below 50% over 100 lookups", "5xx rate 2.01% above 2%"]
