"""`cacheproxy schema`: the JSON Schema editors use must accept what the loader accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
import yaml

from proxy.config.loader import parse_config
from proxy.config.schema import config_schema
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    """The schema as the command prints it, from a real process."""
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "schema"], cwd=ROOT, capture_output=True, check=True
    )
    schema = json.loads(out.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, doc: Any) -> list[str]:
    return [".".join(map(str, e.absolute_path)) for e in validator.iter_errors(doc)]


def test_example_config_is_valid(validator: jsonschema.Draft202012Validator) -> None:
    # As written, ${VAR:-default} references and all: what an editor sees.
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert _errors(validator, doc) == []


SHORTHANDS = """
upstream: {url: http://127.0.0.1:9000, retries: 2}
workers: auto
log: {level: debug}
cache: {max_memory: 64MB, max_entry_size: 1048576}
routes:
  - match: {prefix: /a/}
    cache: false
    cors: false
    compression: true
  - match: {prefix: /b/}
    cache: {ttl: "${TTL:-30}", per_user: true}
"""


def test_loader_shorthands_are_valid(validator: jsonschema.Draft202012Validator) -> None:
    parse_config(SHORTHANDS, env={})  # the loader takes it...
    assert _errors(validator, yaml.safe_load(SHORTHANDS)) == []  # ...so the schema must too


@pytest.mark.parametrize(
    ("mutation", "path"),
    [
        ({"listen": {"port": 70000}}, "listen.port"),
        ({"listen": {"prot": 8080}}, "listen"),  # a typo'd key
        ({"upstream": {}}, "upstream"),  # url is required
        ({"workers": 0}, "workers"),
        ({"upstream": {"url": "http://127.0.0.1:9000", "retries": 11}}, "upstream.retries"),
        ({"workers": "many"}, "workers"),
        ({"cache": {"max_memory": "lots"}}, "cache"),
        ({"log": {"level": "LOUD"}}, "log.level"),
        ({"routes": [{"match": {"prefix": "/x/"}, "cache": {"ttl": -1}}]}, "routes.0.cache"),
    ],
)
def test_wrong_values_are_rejected(
    validator: jsonschema.Draft202012Validator, mutation: dict[str, Any], path: str
) -> None:
    doc: dict[str, Any] = {"upstream": {"url": "http://127.0.0.1:9000"}}
    doc.update(mutation)
    errors = _errors(validator, doc)
    assert errors, f"{mutation} passed the schema"
    assert any(e.startswith(path) for e in errors), errors


def test_renamed_models_keep_their_published_names() -> None:
    """Editors' settings may point at a definition by name: renaming a class in code must not
    move it (`CorsSettings` is published as `CorsConfig`, the whole file as `Config`)."""
    schema = config_schema()
    assert schema["title"] == "Config"
    assert {"CorsConfig", "CompressionConfig"} <= schema["$defs"].keys()
    assert not {"CorsSettings", "CompressionSettings"} & schema["$defs"].keys()
    assert "#/$defs/CorsConfig" in json.dumps(schema)


def _properties(node: Any, where: str = "#") -> list[tuple[str, dict[str, Any], bool]]:
    """Every property of every object in the schema, definitions and `anyOf` alternatives
    included: (where, its schema, whether its object requires it)."""
    found: list[tuple[str, dict[str, Any], bool]] = []
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            required = set(node.get("required", ()))
            for key, body in properties.items():
                found.append((f"{where}/properties/{key}", body, key in required))
        for key, value in node.items():
            found += _properties(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _properties(item, f"{where}/{i}")
    return found


def test_every_key_has_a_description_and_optional_ones_a_default(
    validator: jsonschema.Draft202012Validator,
) -> None:
    """What an editor shows on hover, and the configuration reference's source
    (docs/configuration.md): a key added without a description fails here."""
    found = _properties(validator.schema)
    assert len(found) > 150  # the walk reached the definitions, not only the top level
    assert [where for where, body, _ in found if not body.get("description")] == []
    no_default = [where for where, body, needed in found if not needed and "default" not in body]
    assert no_default == []


def test_examples_are_accepted_by_their_key(validator: jsonschema.Draft202012Validator) -> None:
    """An example an editor offers must be a value the key takes."""
    schema = json.loads(json.dumps(validator.schema))
    checked = 0
    for where, body, _ in _properties(schema):
        for example in body.get("examples", ()):
            key = {k: v for k, v in body.items() if k != "examples"}
            sub = {"$defs": schema["$defs"], **key}
            errors = list(jsonschema.Draft202012Validator(sub).iter_errors(example))
            assert errors == [], f"{where}: example {example!r}: {errors[0].message}"
            checked += 1
    assert checked > 40
