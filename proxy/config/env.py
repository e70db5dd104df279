"""Environment overrides: `CACHEPROXY_<KEY>__<KEY>...` sets a config key whatever the file says.

The mapping is pydantic-settings' (`env_prefix="CACHEPROXY_"`, `env_nested_delimiter="__"`):
a key path `redis.url` is `CACHEPROXY_REDIS__URL`, `shutdown_grace` is
`CACHEPROXY_SHUTDOWN_GRACE`; names are matched case-insensitively. A key holding a section, a
list or a mapping (`cache.tiers`, `trusted_proxies`, `redis`) takes JSON
(`CACHEPROXY_CACHE__TIERS='["memory", "redis"]'`); any other key takes the text as it is, and
validation converts it as it does a `${VAR}` value (`"8080"` where a port is due). Entries of a
list (`routes`) cannot be addressed one by one: set the whole list as JSON.

Overrides are applied to the file's data before validation, so a bad value is reported like
the file's own, with its key path and the variable's name (never its value). A variable
with the prefix that names no key is reported back, for a warning: a typo must not pass
silently.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from proxy.config.keys import closest, keys
from proxy.config.keys import sections as _models

PREFIX = "CACHEPROXY_"
DELIMITER = "__"
# Names the image's old config read (docs/deployment.md "Containers"): set but read by no
# `${...}` of the file, they get a warning naming the variable that now does their job.
RENAMED = {
    "UPSTREAM_URL": "CACHEPROXY_UPSTREAM__URL",
    "ADMIN_TOKEN": "CACHEPROXY_ADMIN__TOKEN",
    "REDIS_URL": "CACHEPROXY_REDIS__URL",
    "WORKERS": "CACHEPROXY_WORKERS",
    "PROXY_PORT": "CACHEPROXY_LISTEN__PORT",
}
_COLLECTIONS = (tuple, list, dict, set, frozenset, Mapping)


def variable(path: tuple[str, ...]) -> str:
    """The variable that overrides the key at `path`."""
    return PREFIX + DELIMITER.join(part.upper() for part in path)


def required(path: tuple[str, ...], model: type[BaseModel]) -> tuple[str, ...]:
    """`path` to a missing key, down to the first required key inside it if it is a section:
    `("upstream",)` -> `("upstream", "url")`, the variable worth naming."""
    current: type[BaseModel] | None = model
    for part in path:
        info = current.model_fields.get(part) if current is not None else None
        sections = _models(info.annotation) if info is not None else []
        current = sections[0] if len(sections) == 1 else None
    while current is not None:
        inner = next((k for k, f in current.model_fields.items() if f.is_required()), None)
        # A section needing one of several keys names its usual one (upstream: url).
        inner = inner or getattr(current, "NAMED_WHEN_MISSING", None)
        if inner is None:
            break
        path = (*path, inner)
        sections = _models(current.model_fields[inner].annotation)
        current = sections[0] if len(sections) == 1 else None
    return path


def _takes_json(annotation: Any) -> bool:
    """A section, list or mapping: pydantic-settings' "complex" fields, given as JSON."""
    if _models(annotation):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _takes_json(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(_takes_json(arg) for arg in typing.get_args(annotation))
    return isinstance(origin, type) and issubclass(origin, _COLLECTIONS)


def resolve(name: str, model: type[BaseModel]) -> tuple[tuple[str, ...], bool] | None:
    """(key path, takes JSON) for a variable name with the prefix, or None if it names no key."""
    if not name.upper().startswith(PREFIX):
        return None
    parts = name[len(PREFIX) :].lower().split(DELIMITER)
    current: type[BaseModel] | None = model
    path: list[str] = []
    for i, part in enumerate(parts):
        fields = current.model_fields if current is not None else {}
        if part not in fields:
            return None
        path.append(part)
        annotation = fields[part].annotation
        if i == len(parts) - 1:
            return tuple(path), _takes_json(annotation)
        sections = _models(annotation)
        current = sections[0] if len(sections) == 1 else None
    return None


@dataclass(frozen=True)
class Override:
    variable: str
    path: tuple[str, ...]
    value: Any


@dataclass
class Overrides:
    """What the environment asks of the config."""

    applied: list[Override] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (key path, message)
    unknown: list[str] = field(default_factory=list)  # prefixed names that name no key

    def paths(self) -> dict[str, str]:
        """Dotted key path -> the variable that sets it."""
        return {".".join(o.path): o.variable for o in self.applied}


def read(env: Mapping[str, str], model: type[BaseModel]) -> Overrides:
    found = Overrides()
    for name in sorted(env):
        if not name.upper().startswith(PREFIX):
            continue
        resolved = resolve(name, model)
        if resolved is None:
            found.unknown.append(name)
            continue
        path, takes_json = resolved
        value: Any = env[name]
        if takes_json:
            try:
                value = json.loads(value)
            except ValueError:
                found.problems.append(
                    (
                        ".".join(path),
                        f"{name} must be JSON for this key (a list or a mapping, "
                        'e.g. ["a", "b"] or {"key": "value"}); value not shown',
                    )
                )
                continue
        found.applied.append(Override(name, path, value))
    return found


def apply(raw: dict[str, Any], overrides: Overrides) -> None:
    """Set each override in the file's data (in place); a clash is added to the problems."""
    for override in overrides.applied:
        node = raw
        for depth, part in enumerate(override.path[:-1]):
            inner = node.get(part)
            if inner is None:
                inner = node[part] = {}
            if not isinstance(inner, dict):
                at = ".".join(override.path[: depth + 1])
                overrides.problems.append(
                    (
                        ".".join(override.path),
                        f"{override.variable} cannot set a key inside {at}: the file sets {at} "
                        f"to a value, not a section; set {variable(override.path[: depth + 1])} "
                        "(JSON) instead",
                    )
                )
                break
            node = inner
        else:
            node[override.path[-1]] = override.value


def suggestion(name: str, model: type[BaseModel]) -> str | None:
    """The variable meant by a misspelt one: a known rename, one `_` that should be `__`, or
    keys misspelt as a file's unknown keys are (`CACHEPROXY_UPSTREAM__TIMEOUT__READ`)."""
    if name in RENAMED:
        return RENAMED[name]
    suffix = name[len(PREFIX) :] if name.upper().startswith(PREFIX) else None
    if suffix is None:
        return None
    for i in _underscores(suffix):
        candidate = PREFIX + suffix[:i] + "_" + suffix[i:]
        if resolve(candidate, model) is not None:
            return candidate
    return _respelt(suffix, model)


def _respelt(suffix: str, model: type[BaseModel]) -> str | None:
    """`suffix`'s key path with each unknown key replaced by the closest known one."""
    current: type[BaseModel] | None = model
    path: list[str] = []
    for part in suffix.lower().split(DELIMITER):
        if current is None:
            return None
        key = part if part in current.model_fields else closest(part, keys(current))
        if key is None:
            return None
        path.append(key)
        found = _models(current.model_fields[key].annotation)
        current = found[0] if len(found) == 1 else None
    candidate = variable(tuple(path))
    return candidate if resolve(candidate, model) is not None else None


def _underscores(text: str) -> Iterator[int]:
    return (i for i, char in enumerate(text) if char == "_")
