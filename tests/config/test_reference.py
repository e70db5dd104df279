"""docs/configuration.md is generated from the JSON Schema and must be what the generator
prints today: the page can never drift from the models the loader checks a file against."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

from proxy.config import reference
from proxy.config.reference import COMMAND
from proxy.config.schema import config_schema
from tests.conftest import ROOT

PAGE = ROOT / "docs" / "configuration.md"


def test_the_committed_page_is_current() -> None:
    """From a real process, as the page's header tells a developer to run it."""
    out = subprocess.run(
        [sys.executable, "-m", "proxy.config.reference"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    )
    assert out.stdout == PAGE.read_text(encoding="utf-8"), (
        f"docs/configuration.md is out of date: run `{COMMAND}` and commit it"
    )


def _object(definition: dict[str, Any]) -> dict[str, Any]:
    return next((a for a in definition.get("anyOf", ()) if a.get("type") == "object"), definition)


def test_every_key_of_every_model_has_a_row() -> None:
    schema = config_schema()
    keys = len(schema["properties"])
    keys += sum(len(_object(d).get("properties", {})) for d in schema["$defs"].values())
    page = reference.reference()
    rows = re.findall(r"^\| `[^`]+` \|", page, re.MULTILINE)
    assert len(rows) == keys
    assert len(set(rows)) == keys  # each model once, at its own key path
    for path in ("upstream.pool.adaptive.tolerance", "routes[].match.regex", "redis.sentinel.db"):
        assert f"| `{path}` |" in page


def test_links_lead_to_anchors_on_the_page() -> None:
    page = reference.reference()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', page))
    links = set(re.findall(r"\]\(#([^)]+)\)", page))
    assert links and links <= anchors
    assert len(anchors) == len(re.findall(r'<a id="', page))  # no anchor twice


def test_a_row_says_type_default_and_example() -> None:
    page = reference.reference()
    assert (
        "| `upstream.timeouts.connect` | duration (seconds, > 0) | `5` | Seconds to open a "
        "connection. | `5`, `500ms` |"
    ) in page
    assert "| `cache.max_memory` | size (bytes) | `256MB` |" in page
    assert "| `upstream` | section [upstream](#upstream) | required |" in page
    assert "| `routes[].cache` | section [cache](#cache), or `true`/`false` | `none` |" in page


def test_a_model_no_key_leads_to_is_refused() -> None:
    """The page would silently miss its keys: the generator says so instead."""
    schema = config_schema()
    schema["$defs"]["Orphan"] = {"type": "object", "properties": {}}
    with pytest.raises(ValueError, match="Orphan"):
        reference._Reference(schema).page()


def test_the_readme_links_to_the_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/configuration.md)" in readme
