"""Which image a tree builds: a key over everything the image is made of, so the image test
builds only when one of them changed and otherwise runs the image it built before.

The inputs are the Dockerfile, .dockerignore, what the Dockerfile COPYs from the tree (the
files .dockerignore lets through; tests/deploy/test_image_key.py checks both lists agree) and
the base image's id. Caches (__pycache__, *.pyc) are neither copied nor hashed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "requirements.lock",
    "requirements-build.lock",
    "pyproject.toml",
    "README.md",  # pyproject's readme: part of the package's metadata
    "deploy/image/config.yaml",
    "proxy",
)


def _cache(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix == ".pyc"


def input_files(root: Path) -> Iterator[Path]:
    """Every file the image is built from, in a stable order."""
    for name in INPUTS:
        path = root / name
        if path.is_dir():
            files = (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
            yield from sorted(p for p in files if not _cache(p.relative_to(root)))
        elif path.is_file():
            yield path


def image_key(root: Path, base_id: str) -> str:
    """Hex digest of the base image's id and each input's path, mode and bytes."""
    digest = hashlib.sha256(f"base {base_id}\n".encode())
    for path in input_files(root):
        data = path.read_bytes()
        executable = os.access(path, os.X_OK)
        name = path.relative_to(root).as_posix()
        digest.update(f"{name}\0{int(executable)}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def copy_sources(dockerfile: str) -> list[str]:
    """The tree paths the Dockerfile's COPY and ADD steps read (not other stages' files)."""
    sources = []
    for line in dockerfile.replace("\\\n", " ").splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = words[1:]
        if any(arg.startswith("--from=") for arg in args):
            continue
        sources += [arg for arg in args if not arg.startswith("--")][:-1]
    return sources
