"""The `log:` section: the process's log format and level, the access log, the stats line
(proxy/observe/logs.py writes them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from proxy.config.durations import Duration
from proxy.config.section import Model


class LogSettings(Model):
    format: Literal["text", "json"] = Field(
        "text",
        description="`json`: the access log and the process's own log as one JSON object per "
        "line; `text`: plain lines.",
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="Least severe messages logged: DEBUG, INFO, WARNING or ERROR, in any case; "
        "the --log-level option overrides it.",
    )
    access: bool = Field(
        True,
        description="One access log line per response on stdout, written off the request path.",
    )
    sample_hits: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of cache hits logged, 0 to 1 (0.01: one in a hundred); misses, "
        "errors and everything else always are.",
        examples=[0.01],
    )
    query_params: tuple[str, ...] = Field(
        (),
        description="Query parameters whose name and value are logged with the path; any "
        "other part of a query never is.",
        examples=[["page", "limit"]],
    )
    stats_interval: Duration = Field(
        60,
        ge=0,
        description="Seconds between two `stats:` lines in the log (requests, hit rate, "
        "p50/p99); 0: none.",
        examples=[60, "5m"],
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value
