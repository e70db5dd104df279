"""The `log:` section: the process's log format and level, the access log, the stats line
(proxy/observe/logs.py writes them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from proxy.config.durations import Duration
from proxy.config.section import Model


class LogSettings(Model):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access: bool = True  # one line per response on stdout
    # Share of cache hits logged (misses, errors and everything else always are).
    sample_hits: float = Field(1.0, ge=0, le=1)
    # Query parameters whose name and value are logged; the rest of a query never is.
    query_params: tuple[str, ...] = ()
    # Seconds between two "stats" lines in the log; 0: none.
    stats_interval: Duration = Field(60, ge=0)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value
