"""The JSON Schema of the config file, for editors: `cacheproxy schema > cacheproxy.schema.json`.

It is pydantic's schema of `Settings`: every key's description, default and examples come from
its model's `Field(...)`, the one source of editors' hover help and of the configuration
reference (docs/configuration.md, proxy/config/reference.py). It is widened where the loader
accepts more than the models' types say, so that an editor never flags a file that
`cacheproxy check-config` accepts:

- any number or boolean may be a `${VAR}` / `${VAR:-default}` reference (resolved at load);
- `cache`, `cors`, `compression` (top level or in a route) may be `true`/`false`;
- sizes may be written `256MB`, durations `250ms` or `5m`; `workers` may be `auto`;
  `log.level` in any case;
- `per_user` may be `true`/`false`; `upstream.retries` a number of attempts; a target, or a
  route's `upstream`, a URL; `cache.tags_header` one name or none as well as a list.

The schema checks shapes, names and ranges; rules across keys (a non-loopback `admin.host`
needs `admin.token`, `tiers: [redis]` needs a `redis:` section, regexes that must compile
in linear time) are the loader's: run `cacheproxy check-config` for the whole verdict.
"""

from __future__ import annotations

import copy
from typing import Any

from proxy.config.compression import CompressionSettings
from proxy.config.cors import CorsSettings
from proxy.config.loader import Settings
from proxy.config.section import Section

ENV_REFERENCE = {
    "type": "string",
    "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
    "description": "an environment variable, resolved when the file is loaded",
}
SIZE = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([kKmMgGtT]?[iI]?[bB]?)\s*$"}
# Models whose class name is not the name their schema definition was published under.
_RENAMED = (CorsSettings, CompressionSettings)
# What stays on a schema when it becomes one alternative of an anyOf: an editor shows help
# from the property's own schema, not from an alternative's.
_KEPT = ("default", "title", "description", "examples")


# Sections that also take `true`/`false` (proxy/config/section.py), plus PerUser's own shorthand.
def _switchable() -> set[str]:
    found, todo = {"PerUser"}, list(Section.__subclasses__())
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return found


def _widen_scalars(node: Any) -> Any:
    """Every integer, number or boolean also accepts a ${VAR} reference."""
    if isinstance(node, list):
        return [_widen_scalars(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _widen_scalars(value) for key, value in node.items()}
    if node.get("type") in ("integer", "number", "boolean"):
        keep: dict[str, Any] = {k: node.pop(k) for k in _KEPT if k in node}
        return {**keep, "anyOf": [node, ENV_REFERENCE]}
    return node


# pydantic writes a bound it could not put on a number's own schema (a duration's number
# inside `anyOf` with its unit-string spelling) under its Python name; JSON Schema's names,
# so editors check it. On an `anyOf` a bound still applies to numbers only.
_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def _json_bounds(node: Any, in_properties: bool = False) -> Any:
    if isinstance(node, list):
        return [_json_bounds(item) for item in node]
    if not isinstance(node, dict):
        return node
    if in_properties:  # keys here are config keys, not keywords
        return {key: _json_bounds(value) for key, value in node.items()}
    return {
        _BOUNDS.get(key, key) if isinstance(value, int | float) else key: _json_bounds(
            value, key == "properties"
        )
        for key, value in node.items()
    }


def _either(schema: dict[str, Any], *alternatives: dict[str, Any]) -> dict[str, Any]:
    keep: dict[str, Any] = {k: schema.pop(k) for k in _KEPT if k in schema}
    return {**keep, "anyOf": [schema, *alternatives]}


def _published_names(schema: dict[str, Any]) -> dict[str, Any]:
    """Definitions of models renamed in code keyed by the names the schema was published
    under, so that a `$ref` to `#/$defs/CorsConfig` in an editor's settings still resolves."""
    renamed = {model.__name__: str(model.model_config["title"]) for model in _RENAMED}

    def refs(node: Any) -> Any:
        if isinstance(node, list):
            return [refs(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref", "").removeprefix("#/$defs/")
        if ref in renamed:
            node = {**node, "$ref": "#/$defs/" + renamed[ref]}
        return {key: refs(value) for key, value in node.items()}

    schema = refs(schema)
    schema["$defs"] = {renamed.get(key, key): body for key, body in schema["$defs"].items()}
    return schema


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a cacheproxy config file."""
    schema = _json_bounds(copy.deepcopy(Settings.model_json_schema(mode="validation")))
    defs = schema["$defs"]
    for name in _switchable() & defs.keys():
        defs[name] = _either(defs[name], {"type": "boolean"})
    cache = defs["CacheSettings"]["anyOf"][0]["properties"]
    for size in ("max_memory", "max_entry_size"):
        cache[size] = _either(cache[size], SIZE)
    # An upstream has url or targets; a target, or a route's upstream, may be a URL alone.
    for name in ("Upstream", "UpstreamTargets"):
        defs[name]["anyOf"] = [{"required": ["url"]}, {"required": ["targets"]}]
    defs["TargetSettings"] = _either(defs["TargetSettings"], {"type": "string"})
    defs["Route"]["properties"]["upstream"]["anyOf"].append({"type": "string"})
    cache["tags_header"] = _either(cache["tags_header"], {"type": "string"}, {"type": "null"})
    upstream = defs["Upstream"]["properties"]
    upstream["buffer_body"] = _either(upstream["buffer_body"], SIZE)
    for model in ("Listen", "Route"):
        body = defs[model]["properties"]
        body["max_body_size"] = _either(body["max_body_size"], SIZE)
    attempts = defs["Retries"]["properties"]["attempts"]
    bounds = {k: v for k, v in attempts.items() if k in ("minimum", "maximum")}
    upstream["retries"] = _either(upstream["retries"], {"type": "integer", **bounds})
    props = schema["properties"]
    props["workers"] = _either(props["workers"], {"const": "auto"})
    level = defs["LogSettings"]["properties"]["level"]
    level["enum"] = [*level["enum"], *(word.lower() for word in level["enum"])]
    schema = _published_names(_widen_scalars(schema))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "cacheproxy config",
        **schema,
    }
