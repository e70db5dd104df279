"""The container image, built from the real Dockerfile and run, on a machine without Docker.

Debian's `buildah` builds the Dockerfile with `--isolation chroot`, on a base image made by
`debootstrap --variant=minbase bookworm` with python3, venv and pip: it stands in for
python:3.12-slim (`--build-arg BASE=...`), the Dockerfile none the wiser. The base image and
buildah's images live outside the repository (CACHEPROXY_TEST_CACHE, or
/var/cache/cacheproxy-test as root, else $XDG_CACHE_HOME/cacheproxy-test), so only the first
run pays for debootstrap (about a minute). Each built image is tagged with the key of what it
is made of (tests/deploy/image_key.py): a tree whose Dockerfile, lock, sources and base are
unchanged runs the image it built before instead of building it again (about 90 s saved);
any change builds anew. Every run runs the image.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import ROOT, Origin, free_port
from tests.deploy.image_key import image_key

BASE = "localhost/cacheproxy-test-base:bookworm"
REPOSITORY = "localhost/cacheproxy-test"  # tagged with the image key
INSTALL = "apt-get install buildah debootstrap (scripts/test.sh does it as root)"
TOKEN = "image-test-token"
KEEP_IMAGES = 40
KEEP_TAGGED = 4  # recent trees (branches, worktrees sharing the cache) keep their image
_KEYED = re.compile(re.escape(REPOSITORY) + r":[0-9a-f]{32}")


def _cache_dir() -> Path:
    if "CACHEPROXY_TEST_CACHE" in os.environ:
        return Path(os.environ["CACHEPROXY_TEST_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/cacheproxy-test")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "cacheproxy-test"


class Buildah:
    """buildah with storage of the test's own (vfs: no overlay mounts needed)."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.image = ""  # the image under test, once built or found
        self.inspected: dict[str, Any] = {}
        conf = cache / "containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")  # chroot cannot set ulimits
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        self.prefix = [
            "buildah",
            "--root",
            str(cache / "storage"),
            "--runroot",
            str(cache / "run"),
            "--storage-driver",
            "vfs",
        ]

    def __call__(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            [*self.prefix, *args], env=self.env, capture_output=True, text=True, timeout=900
        )
        if check and done.returncode != 0:
            raise AssertionError(f"buildah {' '.join(args)}: {done.stderr[-3000:]}")
        return done.stdout.strip()

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self.prefix, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def _make_base(buildah: Buildah) -> None:
    """debootstrap a minimal bookworm with python3 and import it as the base image."""
    rootfs = buildah.cache / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,python3-pip",
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
        ],
        check=True,
        capture_output=True,
        timeout=1200,
    )
    # This machine's CA bundle, so pip in the build reaches the package index as the host does.
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/")
    archive = buildah.cache / "base.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(rootfs, arcname=".")
    shutil.rmtree(rootfs)
    ctr = buildah("from", "scratch")
    try:
        buildah("add", ctr, str(archive), "/")
        path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        buildah("config", "--env", path, "--cmd", "python3", ctr)
        buildah("commit", "-q", ctr, BASE)
    finally:
        buildah("rm", ctr, check=False)
        archive.unlink()


@pytest.fixture(scope="module")
def image() -> Iterator[Buildah]:
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: {INSTALL}")
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    buildah = Buildah(cache)
    if not buildah("images", "-q", BASE, check=False):
        _make_base(buildah)
    base_id = buildah("inspect", "--format", "{{.FromImageID}}", BASE)
    buildah.image = f"{REPOSITORY}:{image_key(ROOT, base_id)[:32]}"
    if not buildah("images", "-q", buildah.image, check=False):
        buildah(
            "bud",
            "--format",
            "docker",  # OCI drops HEALTHCHECK
            "--isolation",
            "chroot",
            "--layers",
            "--build-arg",
            f"BASE={BASE}",
            "-t",
            buildah.image,
            str(ROOT),
        )
        _drop_old_images(buildah)
    yield buildah


def _drop_old_images(buildah: Buildah) -> None:
    """vfs keeps whole copies: keep the newest tagged images, and past a few builds drop the
    untagged ones (the layer cache with them). An image a container still uses stays."""
    listed = json.loads(buildah("images", "--json", REPOSITORY, check=False) or "[]")
    keyed = [image for image in listed if all(_KEYED.fullmatch(n) for n in image["names"])]
    keyed.sort(key=lambda image: image["created"], reverse=True)
    for old in keyed[KEEP_TAGGED:]:
        buildah("rmi", old["id"], check=False)
    if len(buildah("images", "-a", "-q").split()) > KEEP_IMAGES:
        buildah("rmi", "--prune", check=False)


@pytest.fixture
def container(image: Buildah) -> Iterator[str]:
    ctr = image("from", "-q", image.image)
    yield ctr
    image("rm", ctr, check=False)


def _config(buildah: Buildah, kind: str = "OCIv1") -> dict[str, Any]:
    """The image's config as `kind` (OCIv1, or Docker for HEALTHCHECK), read once per run."""
    if not buildah.inspected:
        buildah.inspected = json.loads(buildah("inspect", "--type", "image", buildah.image))
    return buildah.inspected[kind]["config"]


def test_image_metadata(image: Buildah) -> None:
    config = _config(image)
    assert config["User"] == "cacheproxy"
    assert config["Entrypoint"] == ["cacheproxy"]
    assert config["Cmd"] == ["run", "--config", "/etc/cacheproxy/config.yaml"]
    assert {"8080/tcp", "9901/tcp"} <= set(config["ExposedPorts"])
    assert "/readyz" in " ".join(_config(image, "Docker")["Healthcheck"]["Test"])


def test_image_holds_no_compiler_and_runs_as_non_root(image: Buildah, container: str) -> None:
    script = "for c in gcc cc c++ g++ clang make ld; do command -v $c && exit 1; done; true"
    image("run", "--isolation", "chroot", container, "--", "sh", "-c", script)
    assert image("run", "--isolation", "chroot", container, "--", "id", "-u") != "0"
    image(
        "run", "--isolation", "chroot", container, "--", "test", "-r", "/etc/cacheproxy/config.yaml"
    )
    # The event loop the benchmarks are measured on (proxy/server/eventloop.py picks it up).
    image(
        "run",
        "--isolation",
        "chroot",
        container,
        "--",
        "/opt/cacheproxy/bin/python",
        "-c",
        "import uvloop, httptools",
    )


def _entrypoint(buildah: Buildah) -> list[str]:
    config = _config(buildah)
    return [*config["Entrypoint"], *config["Cmd"]]


def _proxy_pids(pid: int) -> list[int]:
    """The proxy processes under `buildah run`, seen from the host."""
    found = []
    for child in _descendants(pid):
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"buildah" not in argv[0] and any(b"cacheproxy" in arg for arg in argv):
            found.append(child)
    return found


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


async def test_entrypoint_serves_and_is_healthy(
    image: Buildah, container: str, origin: Origin, http: aiohttp.ClientSession
) -> None:
    """The image's own ENTRYPOINT and CMD, its neutral config set through CACHEPROXY_*
    variables, and a HEALTHCHECK that an API outage does not fail."""
    port, admin_port = free_port(), free_port()
    env = {
        # chroot isolation: the host's network, loopback included
        "CACHEPROXY_UPSTREAM__URL": origin.url,
        "CACHEPROXY_LISTEN__PORT": str(port),
        "CACHEPROXY_ADMIN__PORT": str(admin_port),
        "CACHEPROXY_ADMIN__TOKEN": TOKEN,
        "CACHEPROXY_UPSTREAM__HEALTH_CACHE": "0",  # /health sees the outage below at once
        "CACHEPROXY_SHUTDOWN_DELAY": "1",
    }
    # The API's own CORS response; the image's config must neither strip it nor rate-limit.
    origin.respond = lambda r: web.Response(
        text=f"body of {r.path}",
        headers={"Cache-Control": "max-age=60", "Access-Control-Allow-Origin": "*"},
    )
    flags = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    run = image.popen("run", "--isolation", "chroot", *flags, container, "--", *_entrypoint(image))
    assert run.stdout is not None
    try:
        deadline = time.monotonic() + 30
        while True:
            if run.poll() is not None:
                raise AssertionError(f"the container exited: {run.stdout.read()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", admin_port)) == 0:
                    break
            assert time.monotonic() < deadline, "the container did not listen within 30 s"
            await asyncio.sleep(0.1)
        async with http.get(f"http://127.0.0.1:{admin_port}/health") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "healthy"
        browser = {"Origin": "https://app.elsewhere.test"}
        url = f"http://127.0.0.1:{port}/api/quotes/AAPL"
        async with http.get(url, headers=browser) as resp:
            assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert not any(h.lower().startswith(("ratelimit", "x-ratelimit")) for h in resp.headers)
        async with http.get(url, headers=browser) as resp:
            assert resp.headers["X-Cache"] == "HIT"
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
        # The admin port faces the network in a container, so it wants the token.
        async with http.get(f"http://127.0.0.1:{admin_port}/cache/stats") as resp:
            assert resp.status == 401
        proxies = _proxy_pids(run.pid)
        assert proxies and all(_uid(p) != 0 for p in proxies)
        # The API goes down: the proxy reports it, serves its cache and stays healthy.
        assert origin.upstream.runner is not None
        await origin.upstream.runner.cleanup()
        async with http.get(f"http://127.0.0.1:{admin_port}/health") as resp:
            assert (resp.status, (await resp.json())["status"]) == (200, "degraded")
        async with http.get(url) as resp:
            assert resp.headers["X-Cache"] == "HIT"
        # The HEALTHCHECK command as the image declares it, run in the container.
        check = _config(image, "Docker")["Healthcheck"]["Test"]
        assert check[0] == "CMD"
        image(
            "run",
            "--isolation",
            "chroot",
            "-e",
            f"CACHEPROXY_ADMIN__PORT={admin_port}",
            container,
            "--",
            *check[1:],
        )
    finally:
        # buildah kills its command on SIGTERM; the proxy itself drains on it.
        for pid in _proxy_pids(run.pid):
            os.kill(pid, signal.SIGTERM)
        try:
            output = run.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            run.kill()
            output = run.communicate()[0]
    assert "not ready: serving 1s more before draining" in output  # the override's delay
    assert "draining in-flight requests" in output
