"""Key paths through the settings models: which model a path leads to, and which key a
misspelt one meant. Shared by the file's "unknown key" errors and the environment's
"names no config key" warnings (proxy/config/env.py), so both suggest alike."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

# Close enough to be a typo (`timeout` for `timeouts`, `ttll` for `ttl`), not so loose that
# an unrelated key is offered: a wrong suggestion costs more than none.
_CUTOFF = 0.7


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate `word` most likely misspells, or None if none is close."""
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=_CUTOFF)
    return found[0] if found else None


def sections(annotation: Any) -> list[type[BaseModel]]:
    """The config sections an annotation may hold (`CacheSettings | None` -> [CacheSettings]).

    Not the items of a list: a list's entries are addressed by index, which only a key path
    from a file has (see `model_at`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return sections(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(annotation) for m in sections(arg)]
    return []


def keys(model: type[BaseModel]) -> list[str]:
    """The keys a section takes: its fields' names, and their aliases."""
    names = list(model.model_fields)
    names += [f.alias for f in model.model_fields.values() if f.alias and f.alias not in names]
    return names


def _items(annotation: Any) -> Any:
    """What a list annotation holds (`tuple[Route, ...] | None` -> Route), else None."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _items(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        held = [_items(arg) for arg in typing.get_args(annotation)]
        held = [h for h in held if h is not None]
        return held[0] if len(held) == 1 else None
    if origin in (tuple, list):
        return typing.get_args(annotation)[0]
    return None


def model_at(root: type[BaseModel], path: Sequence[str | int]) -> type[BaseModel] | None:
    """The section at a file's key path (`("routes", 0, "upstream")` -> None: a URL, not a
    section; `("upstream", "timeouts")` -> Timeouts), or None if it is no one section."""
    annotation: Any = root
    for part in path:
        if isinstance(part, int):
            annotation = _items(annotation)
            continue
        found = sections(annotation)
        if len(found) != 1:
            return None
        field = found[0].model_fields.get(part) or next(
            (f for f in found[0].model_fields.values() if f.alias == part), None
        )
        if field is None:
            return None
        annotation = field.annotation
    found = sections(annotation)
    return found[0] if len(found) == 1 else None
