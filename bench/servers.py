"""The processes a benchmark measures: each its own, on loopback, stopped by its own PID.

`Server` starts a command, waits until its port listens and reads the CPU time of the
process and its descendants (a proxy with workers, nginx's workers, Varnish's child).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process {proc.args!r} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {timeout}s")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of one process: on shared cores, steadier than req/s."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """`pid` and every live descendant."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                children.setdefault(int(_stat(int(name))[1]), []).append(int(name))
            except (OSError, IndexError):
                continue  # gone meanwhile
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in process_tree(pid):
        try:
            total += cpu_seconds(p)
        except OSError:
            continue
    return total


class Server:
    """One measured process (and its children) listening on `port`."""

    def __init__(self, name: str, argv: list[str], port: int, stderr: int | None = None) -> None:
        self.name, self.argv, self.port, self.stderr = name, argv, port, stderr
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-"))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def __enter__(self) -> Server:
        # stdout: the proxy's access log, written as in production but not shown.
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.stderr
        )
        try:
            wait_listening(self.port, self.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def upstream(args: list[str], port: int | None = None) -> Server:
    """bench/upstream.py: a plain aiohttp web.Application (also a yardstick)."""
    port = port or free_port()
    argv = [sys.executable, "-m", "bench.upstream", "--port", str(port), *args]
    return Server("upstream", argv, port)


def proxy_config(upstream_port: int, config: dict[str, Any]) -> dict[str, Any]:
    """`config` on loopback ports of its own, in front of the upstream on `upstream_port`."""
    up = config.get("upstream", {})
    return {
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        **config,
        "upstream": {
            "url": f"http://127.0.0.1:{upstream_port}",
            "pool": {"max_connections": 100},
            **up,
        },
    }


def proxy(config: dict[str, Any], name: str = "cacheproxy") -> Server:
    """`cacheproxy run` with `config` (from proxy_config); the access log goes nowhere."""
    server = Server(name, [], config["listen"]["port"])
    path = server.workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    server.argv = [sys.executable, "-m", "proxy", "run", "--config", str(path)]
    server.argv += ["--log-level", "WARNING"]
    return server


def yardstick(kind: str, *args: str) -> Server:
    """bench/yardsticks.py: `app`, `server`, `forward` or `dictcache`."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.yardsticks", kind, "--port", str(port), *args]
    return Server(kind, argv, port)


def _which(name: str) -> str | None:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def nginx(origin_port: int, cache: bool) -> Server | None:
    """nginx in front of `origin_port`, proxy_cache on (with its lock) or plain proxy_pass;
    None when nginx is not installed."""
    binary = _which("nginx")
    if not binary:
        return None
    port = free_port()
    server = Server("nginx proxy_cache" if cache else "nginx proxy_pass", [], port)
    d = server.workdir
    caching = "proxy_cache c; proxy_cache_valid 200 1h; proxy_cache_lock on;" if cache else ""
    (d / "nginx.conf").write_text(
        f"""
daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/f;
  uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  proxy_cache_path {d}/cache levels=1:2 keys_zone=c:64m max_size=2g inactive=1h
                   use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      {caching}
    }}
  }}
}}
"""
    )
    server.argv = [binary, "-p", str(d), "-c", str(d / "nginx.conf")]
    return server


def varnish(origin_port: int) -> Server | None:
    """Varnish (default VCL: caches what the origin allows, coalesces cold keys) in front
    of `origin_port`; None when varnishd is not installed."""
    binary = _which("varnishd")
    if not binary:
        return None
    port = free_port()
    server = Server("Varnish", [], port, stderr=subprocess.DEVNULL)  # chatty even when well
    server.argv = [
        binary, "-F", "-a", f"127.0.0.1:{port}", "-b", f"127.0.0.1:{origin_port}",
        "-n", str(server.workdir / "varnish"), "-s", "malloc,1g",
        "-T", "none",  # no management port
    ]  # fmt: skip
    return server
