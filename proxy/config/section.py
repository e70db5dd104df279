"""The bases of every settings model: `Model` (unknown keys refused, frozen), and `Section`,
one a route can switch off with `false`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Model(BaseModel):
    # A misspelt key is an error, never silently ignored; settings never change once loaded.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Section(Model):
    enabled: bool = Field(
        True,
        description="`false` turns the section off; the section itself may be written `false` "
        "(off) or `true` (on, with its defaults).",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `false` disables; `true` enables with defaults.
        return {"enabled": data} if isinstance(data, bool) else data
