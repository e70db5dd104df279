"""One base for every settings model: a misspelt key anywhere in the file is an error."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from proxy.config.loader import Settings
from proxy.config.section import Model


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The models inside an annotation: `tuple[Route, ...]`, `CacheSettings | None`..."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _reachable(model: type[BaseModel]) -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    todo = [model]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(m for f in current.model_fields.values() for m in _models(f.annotation))
    return found


def test_every_section_of_the_file_derives_from_the_one_base() -> None:
    models = _reachable(Settings)
    names = {m.__name__ for m in models}
    assert {"Route", "Match", "CorsSettings", "SentinelSettings", "StreamLevels"} <= names
    assert sorted(m.__name__ for m in models if not issubclass(m, Model)) == []
    assert all(m.model_config.get("extra") == "forbid" for m in models)
    assert all(m.model_config.get("frozen") for m in models)
