"""Load scenarios: the proxy side by side with its baseline, in the same run.

    python -m bench.run                      # every scenario, 2 rounds of ~5 s load per side
    python -m bench.run passthrough --duration 10 --concurrency 64

Bounded in time (--duration) and count (--max-requests); traffic stays on loopback.
Each process (upstream, proxy, load generator) is its own, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import time
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bench import servers
from bench.loadgen import Result, run_load
from bench.servers import free_port, wait_listening


class Stack:
    """An upstream process and a proxy process in front of it; stopped by their own PIDs."""

    def __init__(self, upstream_args: list[str], proxy_config: dict[str, Any]) -> None:
        self.upstream = servers.upstream(upstream_args)
        self.proxy = servers.proxy(servers.proxy_config(self.upstream.port, proxy_config))
        self.upstream_port, self.proxy_port = self.upstream.port, self.proxy.port
        self._stack = contextlib.ExitStack()

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        return [s.proc for s in (self.upstream, self.proxy) if s.proc is not None]

    def __enter__(self) -> Stack:
        with self._stack as stack:
            stack.enter_context(self.upstream)
            stack.enter_context(self.proxy)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *_: object) -> None:
        self._stack.close()


def peak_rss(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1] + " kB"


Scenario = Callable[[argparse.Namespace], Coroutine[Any, Any, list[Result]]]


async def compare(
    args: argparse.Namespace,
    stack: Stack,
    path: Callable[[int], str],
    baseline: str,
    proxied: str,
    warm_up: bool = True,
    headers: str = "",
) -> list[Result]:
    """Baseline and proxy, alternated for --rounds rounds; the best round of each is kept.

    Two shared cores make single runs noisy; alternating spreads any disturbance.
    """
    load = dict(
        concurrency=args.concurrency,
        duration=args.duration,
        max_requests=args.max_requests,
        headers=headers,
    )
    if warm_up:
        await run_load(
            "warm-up",
            stack.proxy_port,
            path,
            concurrency=4,
            duration=1,
            max_requests=500,
            headers=headers,
        )
    best: dict[str, Result] = {}
    for _ in range(args.rounds):
        for name, port, pid in (
            (baseline, stack.upstream_port, stack.procs[0].pid),
            (proxied, stack.proxy_port, stack.procs[1].pid),
        ):
            result = await run_load(name, port, path, **load, server_pid=pid)
            if name not in best or result.rps > best[name].rps:
                best[name] = result
    return [best[baseline], best[proxied]]


async def passthrough(args: argparse.Namespace) -> list[Result]:
    """Uncached forwarding: what the proxy costs on top of a fast upstream."""
    with Stack(["--size", "1024"], {}) as stack:
        path = lambda i: f"/api/item/{i % 100}?x=1"  # noqa: E731
        return await compare(args, stack, path, "direct upstream (baseline)", "through proxy")


async def hot_keys(args: argparse.Namespace) -> list[Result]:
    """Memory hits on 10 hot keys vs a plain web.Application returning the same bytes."""
    with Stack(["--size", "1024", "--max-age", "3600"], {"cache": {"ttl": 3600}}) as stack:
        path = lambda i: f"/api/hot/{i % 10}"  # noqa: E731
        return await compare(
            args, stack, path, "plain web.Application", "through proxy (memory hits)"
        )


async def hot_keys_br(args: argparse.Namespace) -> list[Result]:
    """Hits on 10 hot 16 KB JSON keys for br-accepting clients: stored variants, no recompression.

    The baseline sends the same 16 KB uncompressed: what a plain app costs before it pays for
    any compression of its own.
    """
    proxy_config = {"cache": {"ttl": 3600}, "compression": {"algorithms": ["br", "gzip"]}}
    with Stack(["--size", "16384", "--max-age", "3600"], proxy_config) as stack:
        path = lambda i: f"/api/hot/{i % 10}"  # noqa: E731
        return await compare(
            args,
            stack,
            path,
            "plain web.Application (identity)",
            "through proxy (br hits)",
            headers="Accept-Encoding: br, gzip\r\n",
        )


async def hot_keys_full(args: argparse.Namespace) -> list[Result]:
    """Memory hits with every stage on (issue 14's goal) vs a plain web.Application:
    a matched route, CORS for an allowed Origin, a stored br variant for br clients, an
    in-memory rate limit that never refuses, metrics, and the access log sampling 1% of hits.

    The baseline sends the same JSON uncompressed, as in hot-keys-br.
    """
    route = {
        "name": "api",
        "match": {"prefix": "/api/"},
        "cache": {"ttl": 3600},
        "cors": {"allow_origins": ["https://app.example.com"], "expose_headers": ["X-Cache"]},
        "compression": {"algorithms": ["br", "gzip"]},
        "rate_limit": {"limits": ["1000000000/minute"], "key": "ip"},
    }
    proxy_config = {"routes": [route], "log": {"access": True, "sample_hits": 0.01}}
    with Stack(["--size", "1024", "--max-age", "3600"], proxy_config) as stack:
        path = lambda i: f"/api/hot/{i % 10}"  # noqa: E731
        return await compare(
            args,
            stack,
            path,
            "plain web.Application",
            "through proxy (full pipeline)",
            headers="Origin: https://app.example.com\r\nAccept-Encoding: br, gzip\r\n",
        )


async def hot_keys_observed(args: argparse.Namespace) -> list[Result]:
    """hot-keys with the access log off, then logging every hit: what the log costs a hit.

    Metrics are on in both (they always are); `python -m bench.observe_cost` gives what
    metrics and the log each add per hit, in microseconds, without the noise of a load test.
    """
    path = lambda i: f"/api/hot/{i % 10}"  # noqa: E731
    load = dict(
        concurrency=args.concurrency, duration=args.duration, max_requests=args.max_requests
    )
    results = []
    for name, log in (
        ("access log off", {"access": False}),
        ("access log on, every hit", {"access": True, "sample_hits": 1}),
    ):
        proxy_config = {"cache": {"ttl": 3600}, "log": log}
        with Stack(["--size", "1024", "--max-age", "3600"], proxy_config) as stack:
            await run_load(
                "warm-up", stack.proxy_port, path, concurrency=4, duration=1, max_requests=500
            )
            runs = [
                await run_load(name, stack.proxy_port, path, **load, server_pid=stack.procs[1].pid)
                for _ in range(args.rounds)
            ]
            results.append(max(runs, key=lambda r: r.rps))
    return results


async def wide_keys(args: argparse.Namespace) -> list[Result]:
    """20,000 keys, skewed like real traffic, against a slow (50 ms) upstream."""
    rng = random.Random(42)
    # Zipf-like: a few keys are hot, most are cold.
    keys = [int(20_000 * rng.random() ** 3) for _ in range(200_000)]
    path = lambda i: f"/api/wide/{keys[i % len(keys)]}?utm_source=bench"  # noqa: E731
    cache = {"ttl": 3600, "max_memory": "64MB", "key": {"query": {"ignore": ["utm_*"]}}}
    with Stack(["--size", "2048", "--delay", "0.05"], {"cache": cache}) as stack:
        results = await compare(
            args, stack, path, "slow upstream direct", "through proxy", warm_up=False
        )
        print(f"   proxy process peak RSS: {peak_rss(stack.procs[1].pid)}")
        return results


def upstream_figures(port: int, reset: bool = False) -> dict[str, float]:
    """What the bench upstream saw (bench/upstream.py), or a reset of it."""
    method = "POST" if reset else "GET"
    url = f"http://127.0.0.1:{port}/__bench/{'reset' if reset else 'stats'}"
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
        body = r.read()
    return json.loads(body) if body else {}


async def adaptive(args: argparse.Namespace) -> list[Result]:
    """An upstream that thrashes past 8 requests in flight (20 ms each below that), with
    pool.max_connections 64: adaptive concurrency off, then on."""
    results = []
    path = lambda i: f"/api/item/{i}"  # noqa: E731
    for enabled in (False, True):
        pool = {"max_connections": 64, "max_queue": 1000, "adaptive": enabled}
        with Stack(["--delay", "0.02", "--capacity", "8"], {"upstream": {"pool": pool}}) as stack:
            # Not measured: lets the limit find its level (slow start, then the knee).
            load = dict(concurrency=args.concurrency, max_requests=args.max_requests)
            await run_load("warm-up", stack.proxy_port, path, duration=2, **load)
            await asyncio.to_thread(upstream_figures, stack.upstream_port, True)
            name = f"adaptive {'on' if enabled else 'off'}"
            result = await run_load(
                name,
                stack.proxy_port,
                path,
                duration=args.duration,
                server_pid=stack.procs[1].pid,
                **load,
            )
            seen = await asyncio.to_thread(upstream_figures, stack.upstream_port)
            print(
                f"   {name}: upstream saw {seen['mean_in_flight']:.1f} in flight on average "
                f"(peak {seen['peak_in_flight']:.0f}), {seen['mean_service_ms']:.0f} ms "
                f"per request, {seen['requests']:.0f} requests"
            )
            results.append(result)
    return results


class RedisProcess:
    """A redis-server of the benchmark's own on a free loopback port, stopped by its PID."""

    def __enter__(self) -> RedisProcess:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        wait_listening(self.port, self.proc)
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __exit__(self, *_: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def redis_tier(url: str, **cache: object) -> dict[str, object]:
    return {
        "redis": {"url": url, "timeout": 1},
        "cache": {"ttl": 3600, "tiers": ["memory", "redis"], **cache},
    }


async def hot_keys_redis(args: argparse.Namespace) -> list[Result]:
    """hot-keys with the Redis tier configured: L1 hits must cost the same as without it."""
    with (
        RedisProcess() as redis,
        Stack(["--size", "1024", "--max-age", "3600"], redis_tier(redis.url)) as stack,
    ):
        path = lambda i: f"/api/hot/{i % 10}"  # noqa: E731
        return await compare(
            args, stack, path, "plain web.Application", "through proxy (L1 hits, Redis on)"
        )


async def redis_get_latencies(url: str, duration: float, max_requests: int) -> Result:
    """One GET of a 1 KB value at a time for `duration` s, through redis-py as the proxy
    uses it."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    await client.set("bench:get", b"x" * 1024)
    for _ in range(100):  # the connection made, the code paths warm
        await client.get("bench:get")
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + duration
    while time.perf_counter() < deadline and len(latencies) < max_requests:
        t = time.perf_counter()
        await client.get("bench:get")
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    await client.aclose()
    return Result("one Redis GET (redis-py)", latencies, elapsed=elapsed)


L2_KEYS = 10


def l2_path(i: int) -> str:
    return f"/api/hot/{i % L2_KEYS}"


def l2_config(url: str, room: bool) -> dict[str, object]:
    """The l2-hits proxy: without `room`, its memory tier (1 KB) holds none of the 1 KB
    entries, so that every hit is read from Redis."""
    return redis_tier(url) if room else redis_tier(url, max_memory="1KB")


def l2_ratio(l2: Result, l1: Result, get: Result) -> float:
    """The goal's figure: an L2 hit's p50 over an L1 hit's plus one GET's."""
    return l2.percentile(50) / (l1.percentile(50) + get.percentile(50))


def _cache_status(port: int) -> str:
    url = f"http://127.0.0.1:{port}{l2_path(1)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        r.read()
        return str(r.headers.get("Cache-Status", ""))


async def l2_rounds(args: argparse.Namespace) -> list[tuple[Result, Result, Result]]:
    """(L2 hits, L1 hits, one GET) per round, the three taking turns round after round, so
    that what disturbs the shared machine falls on all three alike."""
    load = dict(concurrency=1, duration=args.duration, max_requests=args.max_requests)
    with RedisProcess() as redis:
        upstream = ["--size", "1024", "--max-age", "3600"]
        with (
            Stack(upstream, l2_config(redis.url, room=False)) as l2,
            Stack(upstream, l2_config(redis.url, room=True)) as l1,
        ):
            for stack in (l2, l1):  # stores the entries (in Redis, and in l1's memory)
                await run_load(
                    "warm-up", stack.proxy_port, l2_path, concurrency=4, duration=1,
                    max_requests=500,
                )  # fmt: skip
            # Each side is what it says: every request to l2 read from Redis, none to l1.
            for stack, shared in ((l2, True), (l1, False)):
                status = await asyncio.to_thread(_cache_status, stack.proxy_port)
                if "hit" not in status or ("detail=shared" in status) != shared:
                    raise SystemExit(f"l2-hits: unexpected Cache-Status {status!r}")
            rounds = []
            for _ in range(args.rounds):
                l2_hits = await run_load(
                    "L2 hits", l2.proxy_port, l2_path, **load, server_pid=l2.procs[1].pid
                )
                l1_hits = await run_load(
                    "L1 hits", l1.proxy_port, l2_path, **load, server_pid=l1.procs[1].pid
                )
                get = await redis_get_latencies(redis.url, args.duration, args.max_requests)
                rounds.append((l2_hits, l1_hits, get))
    return rounds


async def l2_hits(args: argparse.Namespace) -> list[Result]:
    """Hits served from Redis (L1 too small to hold them), one request at a time, against
    an L1 hit plus one Redis GET round trip: the goal is at most 1.5x that sum, in every
    round (the median round is shown)."""
    rounds = await l2_rounds(args)
    ratios = [l2_ratio(*r) for r in rounds]
    for (l2, l1, get), over in zip(rounds, ratios, strict=True):
        print(
            f"   L2 hit p50 {l2.percentile(50) * 1e3:.3f} ms vs L1 hit + one GET "
            f"{(l1.percentile(50) + get.percentile(50)) * 1e3:.3f} ms: {over:.2f}x (goal <= 1.5x)"
        )
    median = sorted(range(len(rounds)), key=ratios.__getitem__)[(len(rounds) - 1) // 2]
    l2, l1, get = rounds[median]
    return [l1, l2, get]


async def hot_keys_ratelimit(args: argparse.Namespace) -> list[Result]:
    """Memory hits on 10 hot keys, in-memory rate limit off vs on (never refusing).

    What the limit adds per request is the difference of the two server-CPU figures.
    """
    config: dict[str, object] = {"cache": {"ttl": 3600}}
    limited = {**config, "rate_limit": {"limits": ["1000000000/minute"], "key": "ip"}}
    upstream = ["--size", "1024", "--max-age", "3600"]
    path = lambda i: f"/api/hot/{i % 10}"  # noqa: E731
    load = dict(
        concurrency=args.concurrency, duration=args.duration, max_requests=args.max_requests
    )
    best: dict[str, Result] = {}
    with Stack(upstream, config) as off, Stack(upstream, limited) as on:
        for stack in (off, on):
            await run_load(
                "warm-up", stack.proxy_port, path, concurrency=4, duration=1, max_requests=500
            )
        for _ in range(args.rounds):
            for name, stack in (("memory hits, no limit", off), ("memory hits, limit on", on)):
                result = await run_load(
                    name, stack.proxy_port, path, **load, server_pid=stack.procs[1].pid
                )
                if name not in best or result.rps > best[name].rps:
                    best[name] = result
    results = list(best.values())
    a, b = (r.cpu_us_per_request for r in results)
    if a is not None and b is not None:
        print(f"   the in-memory limit adds {b - a:.1f} us of server CPU per request")
    return results


async def ratelimit_checks(args: argparse.Namespace) -> list[Result]:
    """Checks/s of the limiter backends themselves, in process: memory vs one Redis."""
    from bench.ratelimit_checks import run

    await run(args.duration)
    return []


async def breaker(args: argparse.Namespace) -> list[Result]:
    """A full outage at 100 req/s: how long until the circuit opens (bench/breaker.py)."""
    from bench.breaker import run

    await run()
    return []


SCENARIOS: dict[str, Scenario] = {
    "passthrough": passthrough,
    "hot-keys": hot_keys,
    "hot-keys-br": hot_keys_br,
    "hot-keys-full": hot_keys_full,
    "hot-keys-observed": hot_keys_observed,
    "wide-keys": wide_keys,
    "hot-keys-redis": hot_keys_redis,
    "l2-hits": l2_hits,
    "hot-keys-ratelimit": hot_keys_ratelimit,
    "ratelimit-checks": ratelimit_checks,
    "adaptive": adaptive,
    "breaker": breaker,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], default=[])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=2, help="alternations; best kept")
    args = parser.parse_args()
    for name in args.scenarios or SCENARIOS:
        print(f"\n== {name}: {SCENARIOS[name].__doc__}")
        results = asyncio.run(SCENARIOS[name](args))
        if not results:  # the scenario printed its own report
            continue
        baseline, *others = results
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
