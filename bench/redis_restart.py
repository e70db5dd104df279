"""A Redis restart under load: what reaches the upstream, and what clients get.

    python -m bench.redis_restart [--rate 300] [--keys 200] [--seconds 14] [--runs 1]

One proxy process with the Redis tier in front of an upstream that responds in `--delay`
seconds over a small pool (`--pool` connections, `--queue` waiting: a storm of misses
overflows it), and a redis-server of its own. Every hot key is warmed, then clients send
`--rate` requests/s (open loop) spread over the hot keys; `--kill-at` seconds in, the
redis-server is killed (by its PID) and started again empty on the same port
`--down-for` seconds later; `--purges N` purges N hot keys (admin API) while it is down.
Printed per run: upstream requests per 100 ms (the busiest buckets after the kill, and the
steady rate before), 503s, client latency p50/max per 500 ms around the restart, and what
the proxy's /cache/stats and /health say at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

from bench.servers import ROOT, free_port, wait_listening


class RedisProcess:
    def __init__(self, port: int, directory: Path) -> None:
        self.port, self.directory = port, directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.directory)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # this one, by its PID
            self.proc.wait()
        self.proc = None


async def run_once(args: argparse.Namespace) -> dict[str, object]:
    arrivals: list[float] = []  # upstream request times (monotonic)

    async def handler(request: web.Request) -> web.StreamResponse:
        arrivals.append(time.monotonic())
        etag = f'"{request.path}"'
        headers = {"Cache-Control": "public, max-age=600", "ETag": etag}
        await asyncio.sleep(args.delay)
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=b"x" * 512, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    up_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", up_port).start()

    work = Path(tempfile.mkdtemp(prefix="redis-restart-"))
    redis = RedisProcess(free_port(), work)
    redis.start()
    port, admin_port = free_port(), free_port()
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "upstream": {
            "url": f"http://127.0.0.1:{up_port}",
            "pool": {"max_connections": args.pool, "max_queue": args.queue},
        },
        "redis": {"url": f"redis://127.0.0.1:{redis.port}/0", "timeout": 0.25},
        "cache": {"tiers": ["memory", "redis"]},
        "log": {"access": False},
    }
    proxy = _start_proxy(work, config)
    results: list[tuple[float, int, float]] = []  # (sent at, status, latency)
    try:
        wait_listening(port, proxy)
        base = f"http://127.0.0.1:{port}"
        admin = f"http://127.0.0.1:{admin_port}"
        connector = aiohttp.TCPConnector(limit=400)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            paths = [f"/hot/{i}" for i in range(args.keys)]
            for i in range(0, len(paths), 20):  # warm every key (and Redis)
                await asyncio.gather(*(_get(http, base + p) for p in paths[i : i + 20]))
            await asyncio.sleep(1.0)
            arrivals.clear()

            async def one(path: str) -> None:
                sent = time.monotonic()
                status = await _get(http, base + path)
                results.append((sent, status, time.monotonic() - sent))

            start = time.monotonic()
            tasks: list[asyncio.Task[None]] = []
            killed = restarted = purged = False
            n = 0
            while (now := time.monotonic()) - start < args.seconds:
                if not killed and now - start >= args.kill_at:
                    redis.kill()
                    killed = True
                if killed and not purged and now - start >= args.kill_at + args.down_for / 2:
                    purged = True
                    for path in paths[: args.purges]:
                        purge = {"url": path}
                        async with http.post(f"{admin}/cache/purge", json=purge) as resp:
                            await resp.read()
                if killed and not restarted and now - start >= args.kill_at + args.down_for:
                    redis.start()
                    restarted = True
                due = int((now - start) * args.rate)
                while n < due:
                    tasks.append(asyncio.create_task(one(paths[n * 7919 % len(paths)])))
                    n += 1
                await asyncio.sleep(0.002)
            await asyncio.gather(*tasks)
            async with http.get(f"{admin}/cache/stats") as resp:
                shared = (await resp.json())["shared"]
            async with http.get(f"{admin}/health") as resp:
                health = (await resp.json())["status"]
    finally:
        proxy.terminate()
        proxy.wait(timeout=15)
        redis.kill()
        await runner.cleanup()
    summary = _summary(args, start, arrivals, results)
    summary["proxy_health_at_end"] = health
    summary["proxy_shared_stats_at_end"] = shared
    return summary


def _start_proxy(work: Path, config: dict[str, object]) -> subprocess.Popen[bytes]:
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    with open(work / "proxy.log", "wb") as errors:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "proxy", "run", "--config", str(work / "config.yaml")],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


async def _get(http: aiohttp.ClientSession, url: str) -> int:
    try:
        async with http.get(url) as resp:
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


def _summary(
    args: argparse.Namespace,
    start: float,
    arrivals: list[float],
    results: list[tuple[float, int, float]],
) -> dict[str, object]:
    buckets = Counter(int((t - start) * 10) for t in arrivals)
    kill = int(args.kill_at * 10)
    before = [buckets.get(b, 0) for b in range(10, kill)]
    after = sorted((buckets.get(b, 0), b / 10) for b in range(kill, args.seconds * 10))[::-1]
    statuses = Counter(s for _, s, _ in results)
    windows: dict[float, list[float]] = {}
    for sent, _, latency in results:
        windows.setdefault(int((sent - start) * 2) / 2, []).append(latency)
    latencies = {
        w: (round(statistics.median(v) * 1000, 1), round(max(v) * 1000, 1))
        for w, v in sorted(windows.items())
        if args.kill_at - 1 <= w <= args.kill_at + args.down_for + 7
    }
    return {
        "requests": len(results),
        "statuses": dict(statuses),
        "upstream_requests": len(arrivals),
        "upstream_per_100ms_before_kill_max": max(before, default=0),
        "upstream_per_100ms_after_kill_top5": after[:5],
        "latency_p50_max_ms_per_500ms": latencies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=14)
    parser.add_argument("--kill-at", type=float, default=3.0)
    parser.add_argument("--down-for", type=float, default=1.0)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument("--queue", type=int, default=50)
    parser.add_argument("--purges", type=int, default=0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    for run in range(args.runs):
        summary = asyncio.run(run_once(args))
        print(f"run {run + 1}:")
        for key, value in summary.items():
            print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
