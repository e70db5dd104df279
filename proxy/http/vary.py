"""The Vary field as a list (RFC 9110 §12.5.5): adding field names to a response's Vary.

Shared by every stage that makes a response vary on a request field (CORS on Origin,
compression on Accept-Encoding), so that none of them imports another. Which stored variant a
request selects is the cache's business (proxy/cache/policy/vary.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict

__all__ = ["append_vary", "vary_values"]


def append_vary(headers: CIMultiDict[str], *fields: str) -> None:
    """Add *fields* to the response's Vary, folding every Vary header into one (see
    `vary_values`)."""
    values = headers.getall("Vary", [])
    merged = vary_values(values, fields)
    if merged is values:
        return
    if merged:
        headers["Vary"] = merged[0]  # replaces all existing Vary headers
    else:
        headers.popall("Vary", None)


def vary_values(values: list[str], fields: Iterable[str]) -> list[str]:
    """The Vary field values a response ends with when *fields* are added to *values*.

    Existing entries are kept (first spelling wins), duplicates are dropped
    case-insensitively, and `Vary: *` is left alone (*values* itself comes back): it
    already means "varies on everything", so listing more fields would only weaken it
    for naive caches.
    """
    merged: dict[str, str] = {}  # lowercased -> spelling; dicts keep insertion order
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item == "*":
                return values
            if item:
                merged.setdefault(item.lower(), item)
    for field in fields:
        field = field.strip()
        if field == "*":
            return ["*"]
        if field:
            merged.setdefault(field.lower(), field)
    return [", ".join(merged.values())] if merged else []
