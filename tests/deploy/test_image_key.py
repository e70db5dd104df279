"""The image test's key (tests/deploy/image_key.py): every input the image is built from moves
it, nothing else does, and it covers everything the Dockerfile copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.deploy.image_key import INPUTS, copy_sources, image_key, input_files

BASE = "36967345962d"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A tree with one file of every kind the image is built from."""
    for name in ("Dockerfile", ".dockerignore", "requirements.lock", "pyproject.toml"):
        (tmp_path / name).write_text(f"{name}\n")
    (tmp_path / "README.md").write_text("# cacheproxy\n")
    (tmp_path / "deploy/image").mkdir(parents=True)
    (tmp_path / "deploy/image/config.yaml").write_text("upstream: {}\n")
    (tmp_path / "proxy/cache").mkdir(parents=True)
    (tmp_path / "proxy/__init__.py").write_text("")
    (tmp_path / "proxy/cache/store.py").write_text("X = 1\n")
    return tmp_path


@pytest.mark.parametrize(
    "change",
    [
        "Dockerfile",
        ".dockerignore",
        "requirements.lock",
        "pyproject.toml",
        "README.md",
        "deploy/image/config.yaml",
        "proxy/cache/store.py",
    ],
)
def test_changing_any_input_changes_the_key(tree: Path, change: str) -> None:
    before = image_key(tree, BASE)
    path = tree / change
    path.write_bytes(path.read_bytes() + b"# one more line\n")
    assert image_key(tree, BASE) != before


def test_a_new_a_removed_or_a_moved_source_file_changes_the_key(tree: Path) -> None:
    keys = {image_key(tree, BASE)}
    (tree / "proxy/cache/extra.py").write_text("")
    keys.add(image_key(tree, BASE))
    (tree / "proxy/cache/extra.py").unlink()
    (tree / "proxy/cache/store.py").rename(tree / "proxy/store.py")
    keys.add(image_key(tree, BASE))
    assert len(keys) == 3


def test_the_base_image_and_the_executable_bit_are_inputs_too(tree: Path) -> None:
    before = image_key(tree, BASE)
    assert image_key(tree, "0123456789ab") != before
    (tree / "proxy/cache/store.py").chmod(0o755)
    assert image_key(tree, BASE) != before


def test_caches_timestamps_and_other_files_leave_the_key_alone(tree: Path) -> None:
    before = image_key(tree, BASE)
    (tree / "proxy/__pycache__").mkdir()
    (tree / "proxy/__pycache__/store.cpython-311.pyc").write_bytes(b"\0")
    (tree / "proxy/cache/store.pyc").write_bytes(b"\0")
    (tree / "tests").mkdir()
    (tree / "tests/test_x.py").write_text("")
    copied = tree.parent / "copy"
    shutil.copytree(tree, copied)  # new timestamps, same bytes
    (copied / "proxy/cache/store.py").touch()
    assert image_key(tree, BASE) == before
    assert image_key(copied, BASE) == before


def test_the_key_covers_everything_the_dockerfile_copies_and_dockerignore_lets_in() -> None:
    sources = copy_sources((ROOT / "Dockerfile").read_text())
    assert "requirements.lock" in sources and "proxy" in sources
    assert set(sources) <= set(INPUTS)
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    assert set(allowed) <= set(INPUTS)
    files = {path.relative_to(ROOT).as_posix() for path in input_files(ROOT)}
    assert "proxy/server/listener.py" in files and "requirements.lock" in files
