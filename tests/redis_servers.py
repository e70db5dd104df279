"""Real Redis servers for the tests: a single node, a 3-node cluster, a master with a sentinel.

Every server is a `redis-server` process started here on a free loopback port, and stopped
by its own PID. Nothing is mocked and nothing is skipped: without the binary the fixture
fails, naming the fix.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

INSTALL_HINT = (
    "redis-server is needed by the Redis tests: `apt-get install redis-server` "
    "(scripts/test.sh installs it when run as root)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 30000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a Redis cluster node")


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return path


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        [_binary("redis-cli"), "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout + done.stderr


@dataclass
class RedisServer:
    """One redis-server process; `stop` and `start` again keep its port and data dir."""

    port: int
    directory: Path
    extra: list[str] = field(default_factory=list)
    config_file: Path | None = None  # redis-server wants it as its first argument
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "dir": str(self.directory),
        }
        self.proc = subprocess.Popen(
            [
                _binary("redis-server"),
                *([str(self.config_file)] if self.config_file else []),
                *(part for name, value in options.items() for part in (f"--{name}", value)),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server on {self.port} exited: {self.proc.returncode}")
            if "PONG" in _cli(self.port, "PING"):
                return self
            time.sleep(0.02)
        raise AssertionError(f"redis-server on {self.port} did not respond to PING in 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def cli(self, *args: str) -> str:
        return _cli(self.port, *args)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty Redis of the test's own."""
    server = RedisServer(_free_port(), tmp_path / "redis").start()
    yield server
    server.stop()


@dataclass
class RedisCluster:
    nodes: list[RedisServer]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Three masters, no replicas, all 16384 slots covered. Shared by the session's tests:
    give each test its own key prefix."""
    base = tmp_path_factory.mktemp("cluster")
    nodes: list[RedisServer] = []
    try:
        for _ in range(3):  # inside the try: a node that fails to start stops the others
            port = _free_cluster_port()
            options = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            nodes.append(RedisServer(port, base / str(port), options))
            nodes[-1].start()
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        create = ["--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        out = _cli(nodes[0].port, *create)
        # Every node, not only the first: the others learn that all slots are covered by
        # gossip, and until then answer CLUSTERDOWN to the first test that reaches them.
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in nodes):
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster did not form: {out}")
            time.sleep(0.1)
        yield RedisCluster(nodes)
    finally:
        for node in nodes:
            node.stop()


@dataclass
class RedisSentinel:
    master: RedisServer
    replica: RedisServer
    sentinel: RedisServer
    service: str = "mymaster"

    @property
    def sentinel_url(self) -> str:
        return f"redis://127.0.0.1:{self.sentinel.port}"

    def master_port(self) -> int:
        out = self.sentinel.cli("SENTINEL", "get-master-addr-by-name", self.service)
        return int(out.split()[1])


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[RedisSentinel]:
    """A master, its replica and one sentinel (quorum 1) that fails over in about a second."""
    master = RedisServer(_free_port(), tmp_path / "master")
    replica = RedisServer(
        _free_port(), tmp_path / "replica", ["--replicaof", "127.0.0.1", str(master.port)]
    )
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 500\n"
        "sentinel failover-timeout mymaster 2000\n"
    )
    sentinel = RedisServer(_free_port(), tmp_path / "sentinel", ["--sentinel"], conf)
    try:  # one that fails to start stops the others
        for server in (master, replica, sentinel):
            server.start()
        yield RedisSentinel(master, replica, sentinel)
    finally:
        for server in (sentinel, replica, master):
            server.stop()
