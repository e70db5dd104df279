"""The configuration reference, docs/configuration.md, written from the JSON Schema.

    python -m proxy.config.reference > docs/configuration.md

The schema (proxy/config/schema.py) carries each key's description, default and examples from
its model's `Field(...)`: the page is drawn from it, so what editors show on hover and what
the page says are one text, and tests/config/test_reference.py fails when the committed page
is not what this prints. Pure: no I/O but the print in `main`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from proxy.config.durations import PATTERN as DURATION_PATTERN
from proxy.config.schema import ENV_REFERENCE, SIZE, config_schema

COMMAND = "python -m proxy.config.reference > docs/configuration.md"
_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # what CommonMark would read as the start of HTML
_BOUND_WORDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
# A string YAML reads back as itself unquoted (not `*.x`, an alias; not `x:`, a key).
_PLAIN = re.compile(r"[A-Za-z0-9_/.][A-Za-z0-9_./:*+-]*(?<!:)")


@dataclass
class _Table:
    """One model's table: where it first appears in a file, and the other places it may."""

    name: str  # its definition in the schema
    path: str  # `upstream.timeouts`, `routes[]`
    description: str  # the description of the key that holds it
    also: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.path.lower()).strip("-")


def _object(definition: dict[str, Any]) -> dict[str, Any]:
    """A definition's object schema: a section that may be `true`/`false` is an anyOf."""
    for alternative in definition.get("anyOf", ()):
        if alternative.get("type") == "object":
            return dict(alternative)
    return definition


def _switchable(definition: dict[str, Any]) -> bool:
    return "anyOf" in definition and any(
        leaf.get("type") == "boolean" for leaf, _ in _leaves(definition, {})
    )


def _leaves(
    node: dict[str, Any], bounds: dict[str, Any]
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The alternatives a value may take, with the bounds of the anyOf around them; a
    `${VAR}` reference, which every scalar takes, is said once in the page's header."""
    bounds = {**bounds, **{k: node[k] for k in _BOUND_WORDS if k in node}}
    if "anyOf" in node:
        for alternative in node["anyOf"]:
            yield from _leaves(alternative, bounds)
    elif node != ENV_REFERENCE:
        yield node, bounds


def _range(bounds: dict[str, Any], size: bool = False) -> str:
    def number(value: float) -> str:
        return _size(int(value)) if size else _yaml(value)

    low, high = bounds.get("minimum"), bounds.get("maximum")
    if low is not None and high is not None:
        return f", {number(low)} to {number(high)}"
    words = []
    if low is not None:
        words.append(f">= {number(low)}")
    if "exclusiveMinimum" in bounds:
        words.append(f"> {number(bounds['exclusiveMinimum'])}")
    if high is not None:
        words.append(f"<= {number(high)}")
    if "exclusiveMaximum" in bounds:
        words.append(f"< {number(bounds['exclusiveMaximum'])}")
    return ", " + ", ".join(words) if words else ""


class _Reference:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.defs: dict[str, Any] = schema["$defs"]
        self.tables: dict[str, _Table] = {}  # by definition name, in the order they appear

    def link(self, name: str) -> str:
        return f"[{self.tables[name].path}](#{self.tables[name].anchor})"

    def type_of(self, node: dict[str, Any]) -> str:
        """What a key takes, in words: `duration (seconds, > 0)`, `list of string`..."""
        words: list[str] = []
        leaves = list(_leaves(node, {}))
        patterns = {leaf.get("pattern") for leaf, _ in leaves}
        for leaf, bounds in leaves:
            kind = leaf.get("type")
            if "$ref" in leaf:
                name = leaf["$ref"].removeprefix("#/$defs/")
                section = "section " + self.link(name)
                switch = ", or `true`/`false`" if _switchable(self.defs[name]) else ""
                words.append(section + switch)
            elif "const" in leaf:
                words.append(f"`{leaf['const']}`")
            elif "enum" in leaf:
                # `log.level` takes any case: the schema lists both, the page the one.
                enum = leaf["enum"]
                values = [v for v in enum if v == v.upper() or v.upper() not in enum]
                words.append("one of " + ", ".join(f"`{v}`" for v in values))
            elif kind == "array":
                words.append("list of " + self.type_of(leaf["items"]))
            elif kind == "null":
                continue  # said by the default, `none`
            elif leaf.get("pattern") in (DURATION_PATTERN, SIZE["pattern"]):
                continue  # said by its number's entry
            elif kind in ("integer", "number") and DURATION_PATTERN in patterns:
                unit = "whole seconds" if kind == "integer" else "seconds"
                words.append(f"duration ({unit}{_range(bounds)})")
            elif kind == "integer" and SIZE["pattern"] in patterns:
                words.append(f"size (bytes{_range(bounds, size=True)})")
            elif kind in ("integer", "number"):
                words.append(f"{kind}{_range(bounds)}")
            else:
                words.append(str(kind))
        return ", or ".join(words)

    def collect(self, root: str) -> list[str]:
        """Every model reachable from `root`, each at its shortest key path (the top-level
        `cache`, not `routes[].cache`), in the order of the page: each after its parent, as
        a file's keys nest."""
        self.tables[root] = _Table(root, "", "")
        children: dict[str, list[str]] = {root: []}
        queue = [root]
        while queue:
            name = queue.pop(0)
            path = self.tables[name].path
            for key, body in _object(self.defs[name]).get("properties", {}).items():
                for ref, suffix in self._refs(body):
                    where = f"{path}.{key}{suffix}" if path else key + suffix
                    if ref in self.tables:
                        self.tables[ref].also.append(where)
                        continue
                    self.tables[ref] = _Table(ref, where, body["description"])
                    children[name].append(ref)
                    children[ref] = []
                    queue.append(ref)

        def nested(name: str) -> list[str]:
            return [name, *(n for child in children[name] for n in nested(child))]

        return nested(root)

    def _refs(self, node: dict[str, Any]) -> Iterator[tuple[str, str]]:
        """The models a key may hold: (definition, `[]` if in a list)."""
        for leaf, _ in _leaves(node, {}):
            if "$ref" in leaf:
                yield leaf["$ref"].removeprefix("#/$defs/"), ""
            elif leaf.get("type") == "array":
                for ref, _ in self._refs(leaf["items"]):
                    yield ref, "[]"

    def table(self, name: str, required: set[str], properties: dict[str, Any], prefix: str) -> str:
        rows = ["| key | type | default | description | example |", "|---|---|---|---|---|"]
        for key, body in properties.items():
            default = "required" if key in required else _default(body)
            examples = ", ".join(f"`{_yaml(e)}`" for e in body.get("examples", ()))
            cells = [f"`{prefix}{key}`", self.type_of(body), default, body["description"], examples]
            rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        return "\n".join(rows)

    def page(self) -> str:
        root = "Config"
        self.defs[root] = {k: v for k, v in self.schema.items() if k != "$defs"}
        out = [_HEADER.format(command=COMMAND)]
        for name in self.collect(root):
            table = self.tables[name]
            body = _object(self.defs[name])
            if name == root:
                out.append('<a id="top-level"></a>\n\n## Top-level keys\n')
                prefix = ""
            else:
                depth = "##" if "." not in table.path else "###"
                out.append(f'<a id="{table.anchor}"></a>\n\n{depth} `{table.path}`\n')
                out.append(_markdown(table.description) + "\n")
                if table.also:
                    places = ", ".join(f"`{p}`" for p in table.also)
                    out.append(f"The same keys, with the same meaning, at {places}.\n")
                if _switchable(self.defs[name]):
                    out.append(
                        f"`{table.path.rsplit('.', 1)[-1]}: false` turns it off; `true` turns "
                        "it on with the defaults below.\n"
                    )
                prefix = table.path + "."
            required = set(body.get("required", ()))
            out.append(self.table(name, required, body.get("properties", {}), prefix) + "\n")
        unreached = set(self.defs) - set(self.tables)
        if unreached:  # a model only a schema rewrite links to: the page would miss its keys
            raise ValueError(f"definitions no key leads to: {sorted(unreached)}")
        return "\n".join(out)


_HEADER = """\
# Configuration reference

<!-- Generated from the JSON Schema: do not edit. Change the `Field(description=...,
examples=[...])` of the key in proxy/config/ and run `{command}`;
tests/config/test_reference.py fails while this page is not what that prints. -->

Every key of the config file, generated from the same pydantic models the loader checks a file
against (`cacheproxy schema` prints them as a JSON Schema, for editors: see the
[configuration guide](configuration-guide.md) for the file, environment overrides and
editor support). `cacheproxy check-config --config FILE` checks a file.

- Any number or boolean may also be `${{VAR}}` or `${{VAR:-default}}`, read from the environment
  when the file is loaded; `CACHEPROXY_<KEY>__<KEY>` variables set any key whatever the file
  says (`upstream.pool.max_connections` is `CACHEPROXY_UPSTREAM__POOL__MAX_CONNECTIONS`).
- A **duration** is a number of seconds (`30`, `0.25`) or a number with a unit: `250ms`, `10s`,
  `1.5s`, `5m`, `1h`, `1d`; whole seconds refuse `1.5s`.
- A **size** is a number of bytes or a number with a binary unit: `512KB`, `8 MiB`, `256MB`, `1GB`.
- A **rate** is `N/second`, `N/minute`, `N/hour`, `N/day` or `N/<seconds>s` (`10/30s`).
- `none` as a default: the key is unset (`null` in YAML, or leave it out).
- A key marked "top level only" is refused in a route.
"""


def _yaml(value: Any) -> str:
    """`value` as YAML flow style, as one would write it in the file."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, str):
        plain = _PLAIN.fullmatch(value) and value not in ("true", "false", "null")
        return value if plain else json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _default(body: dict[str, Any]) -> str:
    if "default" not in body:
        return ""
    value = body["default"]
    if isinstance(value, dict):
        return "see its keys"  # a section: each key's default is in its table
    is_size = any(leaf.get("pattern") == SIZE["pattern"] for leaf, _ in _leaves(body, {}))
    if is_size and isinstance(value, int):
        return f"`{_size(value)}`"
    return f"`{_yaml(value)}`"


def _size(value: int) -> str:
    for unit, factor in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if value and value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def _markdown(text: str) -> str:
    """`text` as Markdown shows it: `<Name>` outside a code span would be taken for HTML."""
    parts = text.split("`")
    parts[::2] = [_TAG.sub("&lt;", part) for part in parts[::2]]
    return "`".join(parts)


def _cell(text: str) -> str:
    return _markdown(text).replace("|", "\\|").replace("\n", " ")


def reference() -> str:
    """docs/configuration.md, as it should be."""
    return _Reference(config_schema()).page()


def main() -> None:
    print(reference(), end="")


if __name__ == "__main__":
    main()
