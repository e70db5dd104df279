"""Vary (RFC 9111 §4.1): the request fields a stored response was selected by, and the
normalised values that pick one variant.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from proxy.http.headers import Headers

# Placeholder for a Vary'd request header that is absent (§4.1: an absent
# field only matches an absent field, never an empty one). NUL cannot appear
# in a real field value.
VARY_ABSENT: Final = "\x00"


def vary_fields(response_headers: Headers) -> tuple[str, ...] | None:
    """Lower-cased, sorted, deduplicated Vary names; None for ``Vary: *``."""
    lines = response_headers.getall("Vary", ())
    if not lines:
        return ()
    names: set[str] = set()
    for line in lines:
        for part in line.split(","):
            name = part.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def _normalise_field(lines: list[str]) -> str:
    # §4.1: combine field lines and drop insignificant whitespace around list
    # separators, so "a,b", "a, b" and two lines "a" + "b" all match.
    parts = [p.strip() for line in lines for p in line.split(",")]
    return ", ".join(p for p in parts if p)


def vary_key(fields: Iterable[str], request_headers: Headers) -> tuple[str, ...]:
    """Normalised request values for ``fields`` (in order); selects a variant.

    Absent headers become VARY_ABSENT so they never match an empty value.
    """
    out: list[str] = []
    for name in fields:
        lines = request_headers.getall(name, ())
        out.append(_normalise_field(lines) if lines else VARY_ABSENT)
    return tuple(out)
