"""The `alerts:` section: thresholds over a recent window (proxy/observe/alerts.py judges them)."""

from __future__ import annotations

from pydantic import Field

from proxy.config.durations import WholeSeconds
from proxy.config.section import Model


class AlertSettings(Model):
    # Seconds of traffic each alert looks at.
    window: WholeSeconds = Field(60, ge=5, le=3600)
    # Below this many requests (lookups, for the hit rate) in the window nothing is judged:
    # one miss after a quiet spell is not a hit-rate problem.
    min_requests: int = Field(20, ge=1)
    min_hit_rate: float | None = Field(None, ge=0, le=1)
    max_p99_ms: float | None = Field(None, gt=0)
    max_error_rate: float | None = Field(None, ge=0, le=1)

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.min_hit_rate, self.max_p99_ms, self.max_error_rate))
