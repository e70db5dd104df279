"""Surrogate keys: the response fields that tag an entry for purge by tag, each split as the
cache that made it popular splits it.

- `Surrogate-Key` (Fastly): tags separated by spaces;
- `xkey` (Varnish's vmod_xkey): by spaces and/or commas;
- `Cache-Tag` (Cloudflare) and `Edge-Cache-Tag` (Akamai): by commas, the whitespace around
  each tag and empty ones dropped (`a, b,,c` is `a`, `b`, `c`);
- any other name: by spaces, as this proxy always read its one configured field.

Tags are kept as written (Fastly's keys are case-sensitive; Cloudflare folds case, which a
purge here does not: purge with the spelling the origin sends). A repeated field adds its
tags; a tag listed twice counts once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from multidict import istr

from proxy.http.headers import Headers


def _by_spaces(value: str) -> list[str]:
    return value.split()


def _by_commas(value: str) -> list[str]:
    return [tag for part in value.split(",") if (tag := part.strip(" \t"))]


def _by_spaces_or_commas(value: str) -> list[str]:
    return value.replace(",", " ").split()


_SPLITS: Final[dict[str, Callable[[str], list[str]]]] = {
    "cache-tag": _by_commas,
    "edge-cache-tag": _by_commas,
    "xkey": _by_spaces_or_commas,
}


@dataclass(frozen=True, slots=True)
class TagFields:
    """The response fields a route reads tags from, resolved once at start-up."""

    fields: tuple[tuple[istr, Callable[[str], list[str]]], ...] = ()

    @classmethod
    def named(cls, names: Iterable[str]) -> TagFields:
        """The fields `names` (any case; repeats count once), split by their conventions."""
        seen: dict[str, str] = {}
        for name in names:
            seen.setdefault(name.lower(), name)
        return cls(tuple((istr(name), _SPLITS.get(low, _by_spaces)) for low, name in seen.items()))

    @property
    def names(self) -> frozenset[str]:
        """The fields' names in lower case."""
        return frozenset(name.lower() for name, _ in self.fields)

    def tags(self, headers: Headers) -> tuple[str, ...]:
        """The tags `headers` list, in order, each once."""
        found: dict[str, None] = {}
        for name, split in self.fields:
            for value in headers.getall(name, ()):
                found.update(dict.fromkeys(split(value)))
        return tuple(found)


NO_TAGS: Final = TagFields()
