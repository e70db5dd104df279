"""Durations as configured: seconds (`30`, `0.25`) or a number with a unit (`250ms`, `10s`,
`1.5s`, `5m`, `1h`, `1d`). Pure, no I/O. Every duration key is one of the two types below, so
all take the same spellings and the code reads seconds whatever the file wrote."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

HELP = "seconds, or a number with a unit: 250ms, 10s, 1.5s, 5m, 1h, 1d"
_DURATION = re.compile(r"\s*([0-9]{1,12}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h|d)\s*", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# For the JSON Schema: what the pattern above accepts, for editors.
PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([mM][sS]|[sS]|[mM]|[hH]|[dD])\s*$"


def parse_duration(value: object) -> object:
    """`250ms` -> 0.25, `5m` -> 300.0; a number, or a string holding one, is left to the
    field's number check as it always was (`"30"` from a `${VAR}` is 30 seconds)."""
    if not isinstance(value, str):
        return value
    try:
        float(value)
    except ValueError:
        pass
    else:
        return value
    m = _DURATION.fullmatch(value)
    if m is None:
        raise ValueError(f"not a duration: {value!r} (use {HELP})")
    number, unit = float(m.group(1)), m.group(2).lower()
    # Divided, not multiplied by 0.001: 250ms is exactly the float 0.25.
    return number / 1000 if unit == "ms" else number * _SECONDS[unit]


class _Spellings:
    """In the JSON Schema, a duration is its number (with the field's bounds) or a string
    with a unit, so that an editor accepts what the loader accepts."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        number = handler(core_schema)
        text = {"type": "string", "pattern": PATTERN, "description": HELP}
        return {"anyOf": [number, text]}


_PARSED = BeforeValidator(parse_duration)

# Seconds as a float: timeouts, intervals, delays, TTLs.
Duration = Annotated[float, _PARSED, _Spellings()]
# Whole seconds, where the code needs an int (a window counted in one-second buckets, a
# header's value): `10m` is 600, `1.5s` is refused.
WholeSeconds = Annotated[int, _PARSED, _Spellings()]

__all__ = ["HELP", "Duration", "WholeSeconds", "parse_duration"]
