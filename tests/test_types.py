"""The type check's settings ([tool.mypy] in pyproject.toml) as mypy itself reads them for each
module: `strict = true` cannot be said per module (in an override it turns strict on for every
module), so the pure decision code lists `--strict`'s per-module flags one by one. Should a
mypy release add a flag to `--strict`, these modules miss it until it is listed: this fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mypy.main import process_options
from mypy.options import PER_MODULE_OPTIONS, Options

from tests.conftest import ROOT

# The pure decisions: I/O-free, so every type in them can be exact. A package with its modules.
STRICT_PACKAGES = ("proxy.cache", "proxy.http", "proxy.config")
STRICT_MODULES = {
    "proxy.upstream.breaker",
    "proxy.upstream.gate",
    "proxy.upstream.retry",
    "proxy.upstream.adaptive",
    "proxy.upstream.dns_cache",
    "proxy.upstream.balance",
    "proxy.upstream.ejection",
    "proxy.shared.breaker",
    "proxy.shared.purge_log",
    "proxy.edge.ratelimit.window",
}


def modules() -> Iterator[str]:
    for path in sorted((ROOT / "proxy").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_strict(module: str) -> bool:
    return module in STRICT_MODULES or any(
        module == p or module.startswith(p + ".") for p in STRICT_PACKAGES
    )


def options(*args: str) -> Options:
    return process_options([*args])[1]


@pytest.fixture(scope="module")
def ours() -> Options:
    here = Path.cwd()
    os.chdir(ROOT)  # the config names its files relative to the project
    try:
        return options("--config-file", "pyproject.toml")
    finally:
        os.chdir(here)


def test_the_listed_modules_exist() -> None:
    assert set(modules()) >= STRICT_MODULES


def test_pure_decision_modules_get_every_per_module_flag_of_strict(ours: Options) -> None:
    strict = options("--strict", "--config-file", "", "-c", "pass")
    default = options("--config-file", "", "-c", "pass")
    flags = [n for n in sorted(PER_MODULE_OPTIONS) if getattr(strict, n) != getattr(default, n)]
    assert "disallow_untyped_defs" in flags  # what --strict means, as this mypy has it
    pure = [m for m in modules() if is_strict(m)]
    assert len(pure) > len(STRICT_MODULES)  # the three folders' modules too
    for module in pure:
        mine = ours.clone_for_module(module)
        assert {n: getattr(mine, n) for n in flags} == {n: getattr(strict, n) for n in flags}, (
            module
        )


def test_the_rest_gets_the_baseline(ours: Options) -> None:
    for module in modules():
        if is_strict(module):
            continue
        mine = ours.clone_for_module(module)
        assert mine.check_untyped_defs and mine.warn_unused_ignores, module
        assert mine.strict_equality and not mine.implicit_optional, module
        assert not mine.disallow_untyped_defs, module  # strict is kept to the pure code
