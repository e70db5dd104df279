"""Load scenarios: the proxy side by side with its baseline, in the same run.

    python -m bench.run                      # every scenario, ~5 s of load each
    python -m bench.run passthrough --duration 10 --concurrency 64

Bounded in time (--duration) and count (--max-requests); traffic stays on loopback.
Each process (upstream, proxy, load generator) is its own, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from bench.loadgen import Result, run_load

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process {proc.args} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port} after {timeout}s")


class Stack:
    """An upstream process and a proxy process in front of it; stopped by their own PIDs."""

    def __init__(self, upstream_args: list[str], proxy_config: dict[str, object]) -> None:
        self.upstream_port, self.proxy_port = free_port(), free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.upstream_args = upstream_args
        self.proxy_config = {
            "listen": {"host": "127.0.0.1", "port": self.proxy_port},
            "admin": {"host": "127.0.0.1", "port": free_port()},
            "upstream": {
                "url": f"http://127.0.0.1:{self.upstream_port}",
                "pool": {"max_connections": 100},
            },
            **proxy_config,
        }

    def __enter__(self) -> Stack:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.upstream",
                "--port",
                str(self.upstream_port),
                *self.upstream_args,
            ],
            cwd=ROOT,
        )
        self.procs.append(up)
        wait_listening(self.upstream_port, up)
        cfg = Path(tempfile.mkdtemp()) / "bench.yaml"
        cfg.write_text(yaml.safe_dump(self.proxy_config))
        proxy = subprocess.Popen(
            [sys.executable, "-m", "proxy", "run", "--config", str(cfg), "--log-level", "WARNING"],
            cwd=ROOT,
        )
        self.procs.append(proxy)
        wait_listening(self.proxy_port, proxy)
        return self

    def __exit__(self, *_: object) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


Scenario = Callable[[argparse.Namespace], Awaitable[list[Result]]]


async def passthrough(args: argparse.Namespace) -> list[Result]:
    """Uncached forwarding: what the proxy costs on top of a fast upstream."""
    with Stack(["--size", "1024"], {}) as stack:
        load = dict(
            concurrency=args.concurrency, duration=args.duration, max_requests=args.max_requests
        )
        path = lambda i: f"/api/item/{i % 100}?x=1"  # noqa: E731
        await run_load(
            "warm-up", stack.proxy_port, path, concurrency=4, duration=1, max_requests=500
        )
        direct = await run_load("direct upstream (baseline)", stack.upstream_port, path, **load)
        proxied = await run_load("through proxy (forward)", stack.proxy_port, path, **load)
        return [direct, proxied]


SCENARIOS: dict[str, Scenario] = {"passthrough": passthrough}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], default=[])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=500_000)
    args = parser.parse_args()
    for name in args.scenarios or SCENARIOS:
        print(f"\n== {name}: {SCENARIOS[name].__doc__}")
        baseline, *others = asyncio.run(SCENARIOS[name](args))
        print(baseline.row())
        for result in others:
            print(result.row())
            print(
                f"   ratio vs baseline: {result.rps / baseline.rps:.2f}x req/s, "
                f"p50 {result.percentile(50) / baseline.percentile(50):.2f}x, "
                f"p99 {result.percentile(99) / baseline.percentile(99):.2f}x"
            )


if __name__ == "__main__":
    main()
