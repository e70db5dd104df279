"""Alerts: thresholds over a recent window (the `alerts:` section), evaluated purely.

`evaluate` turns a window's figures into the alerts that hold now; `AlertTracker`
remembers since when each has held and reports what was raised or cleared, for the log.
Neither does I/O or reads a clock: the caller passes the time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.config.alerts import AlertSettings


@dataclass(frozen=True, slots=True)
class Alert:
    name: str  # low_hit_rate, high_p99, high_error_rate
    value: float  # what was measured over the window
    threshold: float
    message: str


def evaluate(settings: AlertSettings, window: Mapping[str, Any]) -> list[Alert]:
    """The alerts `window` (a `stats_window.describe` result) breaks, worst first by name."""
    alerts: list[Alert] = []
    lookups = int(window["hits"]) + int(window["misses"])
    hit_rate = window["hit_rate"]
    if (
        settings.min_hit_rate is not None
        and hit_rate is not None
        and lookups >= settings.min_requests
        and hit_rate < settings.min_hit_rate
    ):
        alerts.append(
            Alert(
                "low_hit_rate",
                hit_rate,
                settings.min_hit_rate,
                f"hit rate {percent(hit_rate, settings.min_hit_rate)} below "
                f"{settings.min_hit_rate * 100:g}% over {lookups} lookups",
            )
        )
    enough = int(window["requests"]) >= settings.min_requests
    p99 = window["response_times"]["p99_ms"]
    if settings.max_p99_ms is not None and enough and p99 is not None and p99 > settings.max_p99_ms:
        alerts.append(
            Alert(
                "high_p99",
                p99,
                settings.max_p99_ms,
                f"p99 {p99:.1f} ms above {settings.max_p99_ms:g} ms",
            )
        )
    error_rate = window["error_rate"]
    if (
        settings.max_error_rate is not None
        and enough
        and error_rate is not None
        and error_rate > settings.max_error_rate
    ):
        alerts.append(
            Alert(
                "high_error_rate",
                error_rate,
                settings.max_error_rate,
                f"5xx rate {percent(error_rate, settings.max_error_rate)} above "
                f"{settings.max_error_rate * 100:g}%",
            )
        )
    return alerts


def percent(value: float, threshold: float) -> str:
    """`value` as a percentage, as the threshold is written, with as many decimals as it
    takes not to read as the threshold it broke ("2.0%" above 2% would read as equal)."""
    for decimals in range(1, 5):
        shown = round(value * 100, decimals)
        if shown != round(threshold * 100, decimals):
            break
    return f"{shown:.{decimals}f}%"


@dataclass(frozen=True, slots=True)
class Active:
    alert: Alert
    since: float  # wall-clock seconds


@dataclass(frozen=True, slots=True)
class Transition:
    raised: bool  # False: cleared
    alert: Alert
    since: float


class AlertTracker:
    """Which alerts hold and since when; `update` says which were raised or cleared."""

    def __init__(self) -> None:
        self.active: dict[str, Active] = {}

    def update(self, alerts: list[Alert], now: float) -> list[Transition]:
        changes: list[Transition] = []
        holding = {a.name: a for a in alerts}
        for name, was in list(self.active.items()):
            if name not in holding:
                del self.active[name]
                changes.append(Transition(False, was.alert, was.since))
        for name, alert in holding.items():
            held = self.active.get(name)
            if held is None:
                changes.append(Transition(True, alert, now))
                self.active[name] = Active(alert, now)
            else:  # still holds: keep its start, show the latest value
                self.active[name] = Active(alert, held.since)
        return changes
