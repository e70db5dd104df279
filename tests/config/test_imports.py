"""The ground floor stays the ground floor: loading a config imports no I/O library and no
other proxy package (checked in a fresh interpreter, where nothing else was imported first)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

# Prints the top-level packages and the proxy modules that importing `module` loaded.
_LOADED = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if "." not in m or m.startswith("proxy."))))
"""


def _loaded(module: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _LOADED, module], cwd=ROOT, capture_output=True, check=True
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_loading_a_config_imports_no_io_library_and_nothing_above_config() -> None:
    loaded = _loaded("proxy.config.loader")
    assert "proxy.config.loader" in loaded  # the check ran where it should
    assert [m for m in loaded if m in ("aiohttp", "redis", "uvloop", "prometheus_client")] == []
    assert [m for m in loaded if m.startswith("proxy.") and not m.startswith("proxy.config")] == []


def test_the_task_helpers_import_no_proxy_module() -> None:
    # proxy/tasks.py sits outside the layers so that every floor may use it: it must stay
    # standard library only, or it would smuggle an upward import past lint-imports.
    loaded = _loaded("proxy.tasks")
    assert [m for m in loaded if m.startswith("proxy.")] == ["proxy.tasks"]
