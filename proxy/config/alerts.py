"""The `alerts:` section: thresholds over a recent window (proxy/observe/alerts.py judges them)."""

from __future__ import annotations

from pydantic import Field

from proxy.config.durations import WholeSeconds
from proxy.config.section import Model


class AlertSettings(Model):
    window: WholeSeconds = Field(
        60,
        ge=5,
        le=3600,
        description="Whole seconds of recent traffic each alert looks at (5 to 3600).",
        examples=[60, "2m"],
    )
    # One miss after a quiet spell is not a hit-rate problem.
    min_requests: int = Field(
        20,
        ge=1,
        description="Fewer requests (cache lookups, for the hit rate) in the window: nothing "
        "is judged and no alert is raised.",
    )
    min_hit_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Alert while the cache hit rate in the window is below this share "
        "(0 to 1); none: no hit-rate alert.",
        examples=[0.7],
    )
    max_p99_ms: float | None = Field(
        None,
        gt=0,
        description="Alert while the 99th percentile latency in the window is above this "
        "many milliseconds (a plain number, not a duration); none: no latency alert.",
        examples=[100],
    )
    max_error_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Alert while the share of 5xx responses in the window is above this "
        "(0 to 1); none: no error-rate alert.",
        examples=[0.05],
    )

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.min_hit_rate, self.max_p99_ms, self.max_error_rate))
