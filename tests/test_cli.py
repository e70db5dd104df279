"""The command line imports what each command needs (proxy/cli.py): `schema` and
`check-config`, run as a user runs them, load no more than the config package loads (which
imports no I/O library), so neither waits most of a second for the server, its admin app,
aiohttp, Redis or the demo."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import typing
from importlib import metadata
from pathlib import Path

import pytest
from pydantic import BaseModel

import proxy
from proxy.cli import LOG_LEVELS
from proxy.config.loader import Settings
from tests.conftest import ROOT

# Records every module loaded by the time the interpreter exits, then runs `python -m proxy`.
RUN = """
import atexit, json, runpy, sys
out, sys.argv = sys.argv[1], ["cacheproxy", *sys.argv[2:]]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
runpy.run_module("proxy", run_name="__main__")
"""
# What the commands cannot do without: parsing arguments, and the config package doing the
# command's work.
BASELINE = "import argparse, logging, resource, signal, runpy, json, atexit, orjson, sys\n"
BASELINE += "import proxy.config.loader, proxy.config.schema\n"


# What serves traffic, never what validates a file.
IO_LIBRARIES = {"aiohttp", "redis", "prometheus_client", "httptools", "uvloop"}


def modules(tmp_path: Path, *argv: str) -> set[str]:
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(out), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text()))


def baseline(tmp_path: Path, work: str) -> set[str]:
    out = tmp_path / "baseline.json"
    script = f"{BASELINE}{work}\nopen(sys.argv[1], 'w').write(json.dumps([*sys.modules]))"
    subprocess.run([sys.executable, "-c", script, str(out)], cwd=ROOT, check=True, timeout=60)
    return set(json.loads(out.read_text()))


@pytest.mark.parametrize(
    ("argv", "work"),
    [
        (["schema"], "proxy.config.schema.config_schema()"),
        (["check-config", "-c", "config.yaml"], "proxy.config.loader.load_config('config.yaml')"),
    ],
    ids=["schema", "check-config"],
)
def test_schema_and_check_config_load_nothing_beyond_the_config_package(
    tmp_path: Path, argv: list[str], work: str
) -> None:
    loaded = modules(tmp_path, *argv)
    extra = loaded - baseline(tmp_path, work)
    assert extra <= {"proxy.cli", "proxy.__main__"}, sorted(extra)
    assert not {name.split(".")[0] for name in loaded} & IO_LIBRARIES


def test_the_log_levels_offered_are_the_settings_levels() -> None:
    log = Settings.model_fields["log"].annotation
    assert isinstance(log, type) and issubclass(log, BaseModel)
    level = log.model_fields["level"]
    assert typing.get_args(level.annotation) == LOG_LEVELS


def test_version_names_the_package_version_and_what_it_runs_on() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    expected = f"cacheproxy {metadata.version('cacheproxy')} (Python {platform.python_version()}"
    assert done.stdout.startswith(expected), done.stdout
    assert f"aiohttp {metadata.version('aiohttp')})" in done.stdout
    assert proxy.__version__ == metadata.version("cacheproxy")  # pyproject reads it from there
