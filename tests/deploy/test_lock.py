"""The lock files (scripts/lock.sh writes them): the image's is the tested one's subset at the
same versions, and the suite runs on exactly the versions the test lock names."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.conftest import ROOT


def pins(lock: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, marker) of every requirement in a lock, each with its hashes."""
    found: dict[str, tuple[str, str]] = {}
    entries = lock.read_text().replace("\\\n", " ").splitlines()
    for entry in entries:
        if not entry.strip() or entry.lstrip().startswith("#"):
            continue
        requirement, _, rest = entry.partition(" --hash=")
        assert rest, f"{lock.name}: no hash for {requirement}"
        spec, _, marker = requirement.partition(";")
        name, _, pinned = spec.partition("==")
        assert pinned, f"{lock.name}: {spec} is not pinned"
        found[canonicalize_name(name)] = (pinned.strip(), marker.strip())
    return found


def test_the_image_installs_a_subset_of_what_is_tested_at_the_same_versions() -> None:
    runtime, tested = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-test.lock")
    assert {"aiohttp", "redis", "prometheus-client", "uvloop"} <= set(runtime)
    assert {name: tested.get(name, ("missing",))[0] for name in runtime} == {
        name: pinned for name, (pinned, _) in runtime.items()
    }


def test_the_suite_runs_on_the_locked_versions() -> None:
    for name, (pinned, marker) in pins(ROOT / "requirements-test.lock").items():
        if not marker or Marker(marker).evaluate():
            assert version(name) == pinned, name
