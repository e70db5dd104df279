"""The base of every config section a route can switch off with `false`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True  # `cache: false` / `cors: false` turns the section off

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `false` disables; `true` enables with defaults.
        return {"enabled": data} if isinstance(data, bool) else data
