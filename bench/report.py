"""The suite's figures: rounds summarised per side, ratios to yardsticks, one markdown table.

Pure (no I/O), so the maths is tested directly (tests/bench/test_report.py).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Run:
    """One round of load against one side."""

    requests: int
    elapsed: float  # seconds
    p50: float  # seconds
    p99: float
    errors: int = 0  # failed connections or reads, and non-2xx/3xx responses
    cpu: float | None = None  # CPU seconds of the server's processes during the round
    loader_cpu: float | None = None  # CPU seconds of the load generator (wrk) in the round

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def cpu_us(self) -> float | None:
        if self.cpu is None or not self.requests:
            return None
        return self.cpu / self.requests * 1e6

    @property
    def loader_cpu_us(self) -> float | None:
        if self.loader_cpu is None or not self.requests:
            return None
        return self.loader_cpu / self.requests * 1e6


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclass
class Side:
    """A side's rounds, summarised: medians, and the req/s range."""

    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return _median([r.rps for r in self.runs])

    @property
    def rps_range(self) -> tuple[float, float]:
        rates = [r.rps for r in self.runs] or [math.nan]
        return min(rates), max(rates)

    @property
    def p50(self) -> float:
        return _median([r.p50 for r in self.runs])

    @property
    def p99(self) -> float:
        return _median([r.p99 for r in self.runs])

    @property
    def cpu_us(self) -> float:
        return _median([c for r in self.runs if (c := r.cpu_us) is not None])

    @property
    def loader_cpu_us(self) -> float:
        return _median([c for r in self.runs if (c := r.loader_cpu_us) is not None])

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)


@dataclass
class Row:
    """One line of the table. `vs` compares the proxy with this row's side (proxy ÷ it),
    or, on the proxy's own row, says which yardstick its goal is measured against."""

    scenario: str
    side: str
    rps: float = math.nan
    rps_min: float = math.nan
    rps_max: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    cpu_us: float = math.nan
    vs: str = ""
    goal: str = ""
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, scenario: str, side: Side, vs: str = "", goal: str = "") -> Row:
        lo, hi = side.rps_range
        return cls(
            scenario,
            side.name,
            side.rps,
            lo,
            hi,
            side.p50 * 1e3,
            side.p99 * 1e3,
            side.cpu_us,
            vs,
            goal,
            side.errors,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def ratio(a: float, b: float) -> float:
    """a ÷ b; NaN when either is missing or b is zero."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b


def x(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def compare(proxy: Side, yardstick: Side) -> str:
    """The proxy against one yardstick: req/s and CPU per request, as ratios."""
    return (
        f"proxy {x(ratio(proxy.rps, yardstick.rps))} req/s, "
        f"{x(ratio(proxy.cpu_us, yardstick.cpu_us))} CPU"
    )


def cores_busy(side: Side) -> float:
    """How many cores' worth of CPU the side and its load generator used together while
    measured: near the machine's core count, more processes could not have gone faster."""
    return ratio(side.rps * (side.cpu_us + side.loader_cpu_us), 1e6)


def cores_allow(side: Side, base: Side, cores: int) -> float:
    """The most req/s `cores` could give `side`, at the CPU per request it and its load
    generator were measured at, as a multiple of `base`'s req/s: where a generator sharing
    the cores caps a scaling figure, whatever the side does."""
    return ratio(ratio(cores * 1e6, side.cpu_us + side.loader_cpu_us), base.rps)


def verdict(value: float, bound: float, at_least: bool) -> str:
    """'met' or 'NOT met' for value against bound (≥ bound if at_least, else ≤)."""
    if math.isnan(value):
        return "n/a"
    ok = value >= bound if at_least else value <= bound
    return "met" if ok else "NOT met"


def goal(label: str, *checks: tuple[float, float, bool]) -> str:
    """`label: met` when every (value, bound, at_least) check holds."""
    verdicts = [verdict(*c) for c in checks]
    if "n/a" in verdicts:
        return f"{label}: n/a"
    return f"{label}: {'NOT met' if 'NOT met' in verdicts else 'met'}"


def every_goal_met(goals: list[str]) -> bool:
    """Whether a run met every goal it states: one not measured (`n/a`, its yardstick not
    installed) does not count as met, and a run stating none met nothing."""
    stated = [g for g in goals if g]
    return bool(stated) and all(g.endswith(": met") for g in stated)


def _num(value: float, digits: int = 0) -> str:
    return "" if math.isnan(value) else f"{value:,.{digits}f}"


def markdown(rows: list[Row]) -> str:
    lines = [
        "| scenario | side | req/s median (range) | p50 ms | p99 ms | CPU µs/req | vs | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rps = _num(r.rps)
        if rps and not math.isnan(r.rps_min):
            rps += f" ({_num(r.rps_min)}-{_num(r.rps_max)})"
        side = r.side + (f" ({r.errors} errors)" if r.errors else "")
        lines.append(
            f"| {r.scenario} | {side} | {rps} | {_num(r.p50_ms, 2)} | {_num(r.p99_ms, 2)} "
            f"| {_num(r.cpu_us, 1)} | {r.vs} | {r.goal} |"
        )
    return "\n".join(lines)
