"""Vary (RFC 9111 §4.1): the request fields a stored response was selected by, and the
normalised values that pick one variant.

§4.1 lets a cache match spellings that the field's own syntax makes equivalent, so that
equivalent requests share one variant instead of each filling its own. Every field gets
whitespace trimmed around list items and its lines combined. The preference lists
(Accept, Accept-Charset, Accept-Encoding, Accept-Language) also get:

- the item itself (media range, charset, coding, language tag) and parameter names
  lower-cased: all are case-insensitive (RFC 9110 §5.6.6, §8.3.1, §8.4.1; RFC 5646 §2.1.1);
- the weight written one way (``q=1``, ``q=1.000`` and none are the same; ``q=0.50`` is
  ``q=0.5``) and items ordered by it, highest first.

Items of equal weight keep their order: RFC 9110 gives it no meaning, but servers commonly
break ties by it (for Accept-Language RFC 4647 §2.3 reads a plain list as "in descending
order"), so ``en, fr`` and ``fr, en`` stay two variants, while ``fr;q=0.5, en`` and
``en, fr;q=0.5`` are one. Parameter values and their order are kept (their case depends on
the parameter). A value that does not parse (quoted strings, a bad weight) falls back to the
whitespace-only form: normalising never makes two different requests share a variant.

Each normalised value is itself a valid spelling of the request's field, so a stored entry
keyed by the previous, whitespace-only form is either still found or simply missed once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Final

from multidict import istr

from proxy.http.headers import Headers

# Placeholder for a Vary'd request header that is absent (§4.1: an absent
# field only matches an absent field, never an empty one). NUL cannot appear
# in a real field value.
VARY_ABSENT: Final = "\x00"

_VARY: Final = istr("Vary")  # asked of every response stored: a str is case-folded each time

_QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")  # RFC 9110 §12.4.2, exactly

# Client-chosen values, parsed on every hit of a varying route: memoised, bounded (FIFO),
# and values too long to be a browser's are parsed but not kept.
_CACHEABLE_LEN = 256
_CACHE_SIZE = 512
_weighted_cache: dict[str, str] = {}


def vary_fields(response_headers: Headers) -> tuple[str, ...] | None:
    """Lower-cased, sorted, deduplicated Vary names; None for ``Vary: *``."""
    lines = response_headers.getall(_VARY, ())
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


def _normalise_list(lines: list[str]) -> str:
    # §4.1: combine field lines and drop insignificant whitespace around list
    # separators, so "a,b", "a, b" and two lines "a" + "b" all match. Inside a quoted
    # string a comma is text and its spaces count: such lines are only trimmed.
    if any('"' in line for line in lines):
        return ", ".join(line.strip() for line in lines)
    parts = [p.strip() for line in lines for p in line.split(",")]
    return ", ".join(p for p in parts if p)


def _weighted_item(element: str) -> tuple[int, str] | None:
    """(weight in thousandths, canonical spelling) of one list item; None if malformed."""
    base, *params = (p.strip() for p in element.split(";"))
    if not base:
        return None
    q = 1000
    out = [base.lower()]
    for i, param in enumerate(params):
        name, eq, value = param.partition("=")
        # No whitespace around "=" in the grammar (§5.6.6): such an item is malformed.
        if not eq or not name or not value or name[-1] in " \t" or value[0] in " \t":
            return None
        name = name.lower()
        if name == "q":
            if i != len(params) - 1 or not _QVALUE_RE.fullmatch(value):
                return None  # the weight ends the item (§12.4.2)
            q = round(float(value) * 1000)
        else:
            out.append(f";{name}={value}")
    if q != 1000:
        out.append(";q=0" if q == 0 else f";q=0.{q:03d}".rstrip("0"))
    return q, "".join(out)


def _normalise_weighted(lines: list[str]) -> str:
    # Memoised by the lines as they came ("\n" cannot be in a field value): a split that
    # lands inside a quoted string may normalise differently from the one-line spelling.
    memo = lines[0] if len(lines) == 1 else "\n".join(lines)
    canonical = _weighted_cache.get(memo)
    if canonical is not None:
        return canonical
    joined = ",".join(lines)
    canonical = _normalise_list(lines)
    if '"' not in joined:  # a quoted string may hold "," or ";": leave it as it was
        items: list[tuple[int, str]] = []
        for element in joined.split(","):
            if element.strip():
                item = _weighted_item(element)
                if item is None:
                    break
                items.append(item)
        else:
            items.sort(key=lambda item: -item[0])  # stable: equal weights keep their order
            canonical = ", ".join(spelling for _, spelling in items)
    if len(memo) <= _CACHEABLE_LEN:
        if len(_weighted_cache) >= _CACHE_SIZE:
            del _weighted_cache[next(iter(_weighted_cache))]  # FIFO eviction, O(1)
        _weighted_cache[memo] = canonical
    return canonical


# Fields whose syntax says more than "a list": the weighted preference lists (RFC 9110 §12.5).
# Origin and unknown fields get the list form, which for a single value is the value itself.
_NORMALISERS: Final[dict[str, Callable[[list[str]], str]]] = {
    "accept": _normalise_weighted,
    "accept-charset": _normalise_weighted,
    "accept-encoding": _normalise_weighted,
    "accept-language": _normalise_weighted,
}


def vary_key(fields: Iterable[str], request_headers: Headers) -> tuple[str, ...]:
    """Normalised request values for ``fields`` (lower-cased names, in order); selects a
    variant. Absent headers become VARY_ABSENT so they never match an empty value.
    """
    out: list[str] = []
    for name in fields:
        lines = request_headers.getall(name, ())
        if lines:
            out.append(_NORMALISERS.get(name, _normalise_list)(lines))
        else:
            out.append(VARY_ABSENT)
    return tuple(out)
