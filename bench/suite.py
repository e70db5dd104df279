"""Issue 14's scenarios, the proxy and its yardsticks side by side, in one table, with
issue 24's goals.

    python -m bench.suite                    # every scenario, about 5 minutes
    python -m bench.suite --runs 3           # three in a row: is every goal met in each?
    python -m bench.suite --quick            # shorter rounds, fewer entries: about 90 s
    python -m bench.suite --json out.json --only hits miss

Each server is its own process on loopback; within a scenario the sides take turns,
round after round, so a disturbance on the shared machine spreads over all of them.
Figures are medians over the rounds (req/s with its range); CPU µs per request is the
server's own CPU time (its processes' utime+stime, children included) over the round's
requests. The `vs` column is always the proxy divided by that row's side.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import load, servers
from bench.load import Load, loader_name, measure
from bench.report import (
    Row,
    Run,
    Side,
    compare,
    cores_allow,
    cores_busy,
    every_goal_met,
    goal,
    markdown,
    ratio,
    x,
)
from bench.servers import Server

ORIGIN = "https://app.example.com"  # what the CORS allowlist accepts


@dataclass(frozen=True)
class Settings:
    rounds: int
    duration: float  # seconds of load per side and round
    cold_duration: float
    entries: int  # scenario 6
    l2_rounds: int  # L2, L1 and GET in turn: the ratio's median over them
    warm_up: float = 1.0


FULL = Settings(rounds=3, duration=3, cold_duration=4, entries=100_000, l2_rounds=5)
QUICK = Settings(rounds=2, duration=1, cold_duration=2, entries=20_000, l2_rounds=3)


def full_pipeline(cache: bool, workers: int = 1, extras: bool = True) -> dict[str, Any]:
    """What users run: a route, CORS, stored br variants, an in-memory rate limit that
    never refuses, metrics (always on) and the access log, sampling 1% of hits.
    `extras=False`: no CORS, rate limit or access log, to see what they cost."""
    route: dict[str, Any] = {"name": "api", "match": {"prefix": "/api/"}}
    if not cache:
        route["cache"] = False
    config: dict[str, Any] = {
        "cache": {"ttl": 3600, "max_memory": "512MB"},
        "compression": {"algorithms": ["br", "gzip"]},
        "log": {"access": False},
        "routes": [route],
    }
    if extras:
        config["cors"] = {"allow_origins": [ORIGIN]}
        config["rate_limit"] = {"limits": ["1000000000/minute"], "key": "ip"}
        config["log"] = {"access": True, "sample_hits": 0.01}
    if workers > 1:
        config["workers"] = workers
    return config


def get(port: int, path: str, headers: tuple[tuple[str, str], ...]) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=dict(headers))
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def measuring(server: Server, load: Load) -> Callable[[int], Run]:
    """A side's round: the same load whatever the round."""
    return lambda _: measure(server, load)


def take_turns(rounds: int, sides: list[tuple[Side, Callable[[int], Run]]]) -> None:
    for r in range(rounds):
        for side, run in sides:
            side.runs.append(run(r))


@contextlib.contextmanager
def optional(server: Server | None, notes: list[str], why: str) -> Iterator[Server | None]:
    """A yardstick that is skipped, with a note, when it is not installed."""
    if server is None:
        notes.append(f"{why}: not installed, skipped")
        yield None
        return
    with server:
        yield server


# --- 1 and 2: memory hits -------------------------------------------------------------


def hits(s: Settings, notes: list[str]) -> list[Row]:
    path = "/api/hot/1"
    headers = (("Accept-Encoding", "br, gzip"), ("Origin", ORIGIN))
    hot = Load((path,), headers, 64, s.duration)
    with contextlib.ExitStack() as stack:
        origin = stack.enter_context(servers.upstream(["--size", "16384", "--max-age", "3600"]))

        def ours(label: str, config: dict[str, Any]) -> Server:
            config = servers.proxy_config(origin.port, config)
            return stack.enter_context(servers.proxy(config, label))

        one = ours("cacheproxy", full_pipeline(True))
        two = ours("cacheproxy, workers: 2", full_pipeline(True, workers=2))
        bare = ours("cacheproxy, cache + br only", full_pipeline(True, extras=False))
        for p in (one, two, bare):
            measure(p, Load((path,), headers, 8, s.warm_up))  # fills each worker's memory tier
        response = get(one.port, path, headers)
        expect = {"X-Cache": "HIT", "Content-Encoding": "br", "Access-Control-Allow-Origin": ORIGIN}
        got = {k: response.getheader(k) for k in expect}
        if got != expect:
            raise SystemExit(f"the proxy's hot key is not a full-pipeline br hit: {got}")
        # The yardsticks respond with the very bytes and headers of the proxy's hit.
        body = _hit_body(one.port, path, headers)
        per_response = {"date", "server", "content-length", "age", "connection", "keep-alive"}
        kept = [(k, v) for k, v in response.getheaders() if k.lower() not in per_response]
        files = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-suite-")))
        (files / "body").write_bytes(body)
        (files / "headers.json").write_text(json.dumps(kept))
        static = ["--body-file", str(files / "body"), "--headers-file", str(files / "headers.json")]

        def yardstick(label: str, server: Server | None) -> Server | None:
            if server is not None:
                server.name = label
            return stack.enter_context(optional(server, notes, label))

        app = yardstick("aiohttp web.Application", servers.yardstick("app", *static))
        assert app is not None
        ngx = yardstick("nginx proxy_cache", servers.nginx(app.port, cache=True))
        yardsticks = [
            app,
            yardstick("aiohttp web.Server (low-level)", servers.yardstick("server", *static)),
            ngx,
            yardstick("Varnish", servers.varnish(app.port)),
        ]
        two_apps = yardstick(
            "web.Application x2 (SO_REUSEPORT)",
            servers.yardstick("app", *static, "--processes", "2"),
        )
        others = [y for y in (*yardsticks, two_apps) if y is not None]
        for y in others:
            measure(y, Load((path,), headers, 8, s.warm_up))  # nginx/Varnish: fetch, store
            if _hit_body(y.port, path, headers) != body:
                raise SystemExit(f"{y.name} does not respond with the same bytes as the proxy")
        measured = [one, two, bare, *others]
        sides = {m: Side(m.name) for m in measured}
        take_turns(s.rounds, [(sides[m], measuring(m, hot)) for m in measured])
    p1, p2, yard = sides[one], sides[two], sides[app]
    name = "1 memory hit, hot key, c=64, full pipeline"
    pipeline = p1.cpu_us - sides[bare].cpu_us
    nginx_cpu = sides[ngx].cpu_us if ngx is not None else math.nan
    rows = [
        Row.of(
            name,
            p1,
            f"vs web.Application: {compare(p1, yard).removeprefix('proxy ')}",
            goal("CPU ≤1.5x nginx proxy_cache's", (ratio(p1.cpu_us, nginx_cpu), 1.5, False)),
        ),
        Row.of(
            name,
            sides[bare],
            f"{compare(p1, sides[bare])}: CORS, limit, log add {pipeline:.1f} µs",
        ),
        *(Row.of(name, sides[y], compare(p1, sides[y])) for y in yardsticks if y is not None),
    ]
    scaled = ratio(p2.rps, p1.rps)
    rows.append(
        Row.of(
            "2 same, workers: 2",
            p2,
            f"{x(scaled)} req/s of 1 process, of at most "
            f"{x(cores_allow(p2, p1, os.cpu_count() or 1))} the shared cores allow; {_busy(p2)}",
            goal("≥1.8x 1 process", (scaled, 1.8, True)),
        )
    )
    if two_apps is not None:
        side = sides[two_apps]
        rows.append(
            Row.of(
                "2 same, workers: 2",
                side,
                f"{x(ratio(side.rps, yard.rps))} req/s of 1 process; {_busy(side)}; "
                + compare(p2, side).replace("proxy", "proxy workers: 2", 1),
            )
        )
    return rows


def _busy(side: Side) -> str:
    """The load generator shares the cores: what it and the side used of them."""
    return (
        f"{cores_busy(side):.2f} of {os.cpu_count()} cores busy "
        f"({loader_name()} {side.loader_cpu_us:.1f} µs/req)"
    )


def _hit_body(port: int, path: str, headers: tuple[tuple[str, str], ...]) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=dict(headers))
    with urllib.request.urlopen(request, timeout=10) as r:
        return bytes(r.read())


# --- 3 and 4: the miss path -----------------------------------------------------------


def misses(s: Settings, notes: list[str]) -> list[Row]:
    headers = (("Origin", ORIGIN),)
    paths = tuple(f"/api/item/{i}?x=1" for i in range(100))
    many, one_at_a_time = Load(paths, headers, 64, s.duration), Load(paths, headers, 1, s.duration)
    with contextlib.ExitStack() as stack:
        origin = stack.enter_context(servers.upstream(["--size", "1024"]))

        def ours(label: str, extras: bool) -> Server:
            config = servers.proxy_config(origin.port, full_pipeline(False, extras=extras))
            return stack.enter_context(servers.proxy(config, label))

        full, bare = (
            ours("cacheproxy, cache off", True),
            ours("cacheproxy, no CORS/limit/log", False),
        )
        up = f"http://127.0.0.1:{origin.port}"
        naive = stack.enter_context(servers.yardstick("forward", "--upstream", up))
        naive.name = "naive aiohttp proxy"
        # The floor: what a miss costs at best in Python on this stack (bench/yardsticks.py).
        floor = stack.enter_context(servers.yardstick("relay", "--upstream", up))
        floor.name = "raw relay floor (uvloop+httptools)"
        ngx = stack.enter_context(optional(servers.nginx(origin.port, cache=False), notes, "nginx"))
        if get(full.port, paths[0], headers).getheader("X-Cache") == "HIT":
            raise SystemExit("the miss path scenario got a cache hit")
        if get(floor.port, paths[0], headers).status != 200:
            raise SystemExit("the raw relay does not forward the miss path scenario's requests")
        at_64 = [m for m in (full, bare, naive, floor, ngx) if m is not None]
        sides = [(Side(m.name), measuring(m, many)) for m in at_64]
        for label, server in (("cacheproxy, c=1", full), ("upstream directly, c=1", origin)):
            sides.append((Side(label), measuring(server, one_at_a_time)))
        for server in at_64:
            measure(server, Load(paths, headers, 8, s.warm_up))
        take_turns(s.rounds, sides)
    ours64, bare64, naive64, floor64, *rest = (side for side, _ in sides)
    *yardsticks, ours1, direct1 = rest
    name = "3 miss path, c=64, cache off"
    pipeline = ours64.cpu_us - bare64.cpu_us
    nginx_cpu = yardsticks[0].cpu_us if yardsticks else math.nan
    rows = [
        Row.of(
            name,
            ours64,
            f"vs naive proxy: {compare(ours64, naive64).removeprefix('proxy ')}",
            goal("CPU ≤3x nginx proxy_pass's", (ratio(ours64.cpu_us, nginx_cpu), 3.0, False)),
        ),
        Row.of(name, bare64, f"{compare(ours64, bare64)}: CORS, limit, log add {pipeline:.1f} µs"),
        Row.of(name, naive64, compare(ours64, naive64)),
        Row.of(
            name,
            floor64,
            f"{compare(ours64, floor64)}; the floor is "
            f"{x(ratio(floor64.cpu_us, nginx_cpu))} nginx proxy_pass's CPU",
        ),
        *(Row.of(name, y, compare(ours64, y)) for y in yardsticks),
    ]
    added = (ours1.p50 - direct1.p50) * 1e3
    name = "4 miss added latency, c=1"
    rows.append(
        Row.of(
            name, ours1, f"+{added:.3f} ms p50 over upstream", goal("≤0.3 ms", (added, 0.3, False))
        )
    )
    rows.append(Row.of(name, direct1))
    rows[-2].extra["added_p50_ms"] = added
    return rows


# --- 5: cold keys against a slow origin ------------------------------------------------


def cold_keys(s: Settings, notes: list[str]) -> list[Row]:
    rng = random.Random(14)
    # Skewed like real traffic: a few keys are hot, most are cold; 10,000 in all.
    keys = [int(10_000 * rng.random() ** 3) for _ in range(100_000)]
    headers = (("Origin", ORIGIN),)
    with contextlib.ExitStack() as stack:
        origin = stack.enter_context(
            servers.upstream(["--size", "2048", "--delay", "0.05", "--max-age", "3600"])
        )
        up = f"http://127.0.0.1:{origin.port}"
        measured = [
            stack.enter_context(
                servers.proxy(servers.proxy_config(origin.port, full_pipeline(True)))
            ),
            stack.enter_context(servers.yardstick("dictcache", "--upstream", up)),
            stack.enter_context(optional(servers.nginx(origin.port, cache=True), notes, "nginx")),
            stack.enter_context(optional(servers.varnish(origin.port), notes, "Varnish")),
        ]
        labels = ["cacheproxy", "dict-cache proxy (~100 lines)", "nginx proxy_cache", "Varnish"]
        sides: list[tuple[Side, Callable[[int], Run]]] = []
        fetches: dict[str, list[tuple[int, int]]] = {}

        def cold_round(server: Server, label: str, r: int) -> Run:
            # A key space of its own per side and round: every round starts cold.
            paths = tuple(f"/api/cold/{r}/{k}" for k in keys)
            _bench_stats(origin.port, reset=True)
            run = measure(server, Load(paths, headers, 64, s.cold_duration))
            seen = _bench_stats(origin.port)
            fetches.setdefault(label, []).append(
                (int(seen["requests"]), int(seen["distinct_paths"]))
            )
            return run

        for server, label in zip(measured, labels, strict=True):
            if server is not None:
                sides.append((Side(label), functools.partial(cold_round, server, label)))
        take_turns(s.rounds, sides)
    ours, yard, *others = (side for side, _ in sides)
    name = "5 10,000 cold keys, 50 ms origin, c=64"

    def once(label: str) -> str:
        counts = fetches[label]
        dup = sum(n - d for n, d in counts)
        fetched = sum(n for n, _ in counts)
        return f"{fetched} fetches, " + ("each key once" if not dup else f"{dup} repeated")

    rows = [
        Row.of(
            name,
            ours,
            f"vs dict-cache: p99 {x(ratio(ours.p99, yard.p99))}, "
            f"{x(ratio(ours.cpu_us, yard.cpu_us))} CPU; {once(ours.name)}",
            goal(
                "p99 ≤70 ms, CPU ≤ dict-cache's",
                (ours.p99 * 1e3, 70, False),
                (ratio(ours.cpu_us, yard.cpu_us), 1.0, False),
            ),
        )
    ]
    for side in (yard, *others):
        rows.append(
            Row.of(
                name,
                side,
                f"proxy p99 {x(ratio(ours.p99, side.p99))}, "
                f"{x(ratio(ours.cpu_us, side.cpu_us))} CPU; {once(side.name)}",
            )
        )
    for row in rows:
        row.extra["upstream_fetches_and_distinct_keys"] = fetches[row.side]
    return rows


def _bench_stats(port: int, reset: bool = False) -> dict[str, float]:
    from bench.run import upstream_figures

    return upstream_figures(port, reset)


# --- 6: memory per stored entry --------------------------------------------------------


def entry_memory(s: Settings, notes: list[str]) -> list[Row]:
    figures = {}
    for side in ("proxy", "dict"):
        argv = [sys.executable, "-m", "bench.entry_memory", side, "--entries", str(s.entries)]
        out = subprocess.run(argv, cwd=servers.ROOT, capture_output=True, text=True, check=True)
        figures[side] = json.loads(out.stdout)
    ours, yard = figures["proxy"], figures["dict"]
    memory = ratio(ours["bytes_per_entry"], yard["bytes_per_entry"])
    name = f"6 memory per entry, {s.entries:,} x 2 KB"

    def describe(f: dict[str, float]) -> str:
        return (
            f"{f['bytes_per_entry'] / 1024:.2f} KB/entry, "
            f"{round(f['objects_per_entry'], 1) + 0.0:.1f} GC-tracked objects/entry"
        )

    rows = [
        Row(
            name,
            "cacheproxy MemoryStore",
            vs=f"{describe(ours)}; {x(memory)} memory",
            goal=goal(
                "≤1.1x memory, ≤2 objects",
                (memory, 1.1, False),
                (ours["objects_per_entry"], 2, False),
            ),
        ),
        Row(name, "dict: key -> (headers, body, expiry)", vs=describe(yard)),
    ]
    rows[0].extra, rows[1].extra = ours, yard
    return rows


# --- 7: Redis L2 hits -----------------------------------------------------------------


def l2_hits(s: Settings, notes: list[str]) -> list[Row]:
    if shutil.which("redis-server") is None:
        notes.append("Redis L2 hits: redis-server not installed, skipped")
        return []
    import asyncio

    from bench import run

    args = argparse.Namespace(duration=s.duration, rounds=s.l2_rounds, max_requests=1_000_000)
    rounds = asyncio.run(run.l2_rounds(args))
    notes.append(
        f"Redis L2 hits: bench.run l2-hits (bench/loadgen.py); L2, L1 and GET take turns for "
        f"{s.l2_rounds} rounds of {s.duration:g} s each, the ratio is each round's, its median "
        "and range shown"
    )
    labels = ("L2 hit (Redis), c=1", "L1 hit, c=1", "one Redis GET")
    sides = [Side(label) for label in labels]
    for results in rounds:
        for side, result in zip(sides, results, strict=True):
            side.runs.append(
                Run(
                    len(result.latencies),
                    result.elapsed,
                    result.percentile(50),
                    result.percentile(99),
                    result.errors,
                    result.server_cpu,
                )
            )
    ratios = [run.l2_ratio(*results) for results in rounds]
    over = statistics.median(ratios)
    name = "7 Redis L2 hit, c=1"
    first, *others = sides
    return [
        Row.of(
            name,
            first,
            f"p50 {x(over)} of L1 hit + one GET (rounds {x(min(ratios))}-{x(max(ratios))})",
            goal("≤1.5x", (over, 1.5, False)),
        ),
        *(Row.of(name, side) for side in others),
    ]


SCENARIOS: dict[str, Callable[[Settings, list[str]], list[Row]]] = {
    "hits": hits,
    "miss": misses,
    "cold": cold_keys,
    "memory": entry_memory,
    "l2": l2_hits,
}


def event_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio's default loop (uvloop not installed), for the proxy and yardsticks alike"
    return "uvloop, for the proxy and yardsticks alike"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 90 s instead of about 5 min")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--rounds", type=int, help="override the mode's rounds")
    parser.add_argument("--loadgen", action="store_true", help="bench/loadgen.py even with wrk")
    parser.add_argument("--runs", type=int, default=1, help="the whole selection, N times in a row")
    args = parser.parse_args()
    if args.loadgen:
        load.use_wrk = False
    settings = QUICK if args.quick else FULL
    if args.rounds:
        settings = Settings(**{**vars(settings), "rounds": args.rounds})
    runs = []
    for run in range(1, args.runs + 1):
        if args.runs > 1:
            print(f"## run {run} of {args.runs}\n", flush=True)
        rows, notes = one_run(settings, args.only)
        runs.append({"rows": [r.as_json() for r in rows], "notes": notes, "quick": args.quick})
        print(markdown(rows))
        print()
        for note in notes:
            print(f"- {note}")
        print(flush=True)
    if args.runs > 1:
        met = [every_goal_met([row["goal"] for row in r["rows"]]) for r in runs]
        print(f"every goal met: {', '.join(f'run {i}: {m}' for i, m in enumerate(met, 1))}")
    if args.json:
        args.json.write_text(json.dumps(runs[0] if args.runs == 1 else runs, indent=1))


def one_run(settings: Settings, only: list[str]) -> tuple[list[Row], list[str]]:
    started, load_before = time.monotonic(), os.getloadavg()[0]
    rows: list[Row] = []
    notes = [f"load: {loader_name()}; event loop: {event_loop()}"]
    for name in only:
        print(f"== {name}", file=sys.stderr, flush=True)
        rows += SCENARIOS[name](settings, notes)
    elapsed = time.monotonic() - started
    notes.append(
        f"{settings.rounds} rounds of {settings.duration:g} s per side "
        f"({settings.cold_duration:g} s for cold keys); {elapsed:.0f} s in all; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, "
        f"on {os.cpu_count()} CPUs"
    )
    return rows, notes


if __name__ == "__main__":
    main()
