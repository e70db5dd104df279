"""`workers: N`: a supervisor and N real worker processes sharing the proxy port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy import __version__ as proxy_version
from proxy.config.loader import MAX_WORKERS, ConfigError, parse_config, usable_cpus
from tests.conftest import ROOT, Origin, ProxyProcess, free_port
from tests.redis_servers import RedisServer

TOKEN = "s3cret-admin-token"

# --- pure -------------------------------------------------------------------------------------


def test_workers_config() -> None:
    def workers(value: str) -> int:
        return parse_config(f"upstream: {{url: http://a}}\nworkers: {value}\n", env={}).workers

    assert workers("3") == 3
    assert workers("auto") == min(usable_cpus(), MAX_WORKERS)
    assert parse_config("upstream: {url: http://a}\nworkers: ${W}\n", env={"W": "4"}).workers == 4
    for bad in ("0", "many", "true", f"{MAX_WORKERS + 1}"):
        with pytest.raises(ConfigError) as caught:
            workers(bad)
        assert caught.value.problems[0].startswith("workers: ")


# --- real processes ---------------------------------------------------------------------------


def fresh_connections() -> aiohttp.ClientSession:
    """Each request on a new connection: the kernel picks a worker per connection."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=15),
    )


async def admin(
    proxy: ProxyProcess, method: str, path: str, token: str | None = None, **kw: Any
) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
        http.request(
            method, f"http://127.0.0.1:{proxy.admin_port}{path}", headers=headers, **kw
        ) as resp,
    ):
        return resp.status, await resp.json(), resp.headers


async def ask_worker(socket_path: str, path: str) -> Any:
    """One worker alone, on the admin socket /workers names."""
    connector = aiohttp.UnixConnector(socket_path)
    async with aiohttp.ClientSession(connector=connector) as http, http.get(f"http://w{path}") as r:
        return await r.json()


async def workers_ready(proxy: ProxyProcess, token: str | None = None) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        status, body, _ = await admin(proxy, "GET", "/workers", token)
        assert status == 200, body
        if all(w["ready"] for w in body["workers"]):
            return body["workers"]
        assert time.monotonic() < deadline, f"workers not ready in 20 s: {body}"
        await asyncio.sleep(0.05)


async def fetch_many(port: int, path: str, count: int) -> Counter[str]:
    """`count` GETs, each on a new connection; the X-Cache values seen."""
    seen: Counter[str] = Counter()
    async with fresh_connections() as http:
        for _ in range(count):
            async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                assert resp.status == 200
                await resp.read()
                seen[resp.headers["X-Cache"]] += 1
                if "detail=shared" in resp.headers.get("Cache-Status", ""):
                    seen["shared"] += 1
    return seen


def parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie nobody has reaped yet (an orphan's, under init)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


async def test_two_workers_serve_the_port_and_their_stats_and_purges_add_up(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, workers=2, cache={"ttl": 60}, listen={"max_connections": 300})
    workers = await workers_ready(proxy)
    pids = {w["pid"] for w in workers}
    assert len(pids) == 2 and all(parent_of(pid) == proxy.proc.pid for pid in pids)

    # Memory only: each worker misses once, then hits. 40 connections all landing on one
    # worker would be a 1 in 2**39 chance.
    seen = await fetch_many(proxy.port, "/k", 40)
    assert (seen["MISS"], seen["HIT"]) == (2, 38)
    assert origin.hits["/k"] == 2

    status, stats, _ = await admin(proxy, "GET", "/cache/stats")
    assert status == 200
    # One worker alone holds one entry and missed once.
    assert (stats["misses"], stats["hits"], stats["stores"], stats["entries"]) == (2, 38, 2, 2)
    _, listener, _ = await admin(proxy, "GET", "/listener/stats")
    assert listener["max_connections"] == 600  # 300 per worker

    status, purged, _ = await admin(proxy, "POST", "/cache/purge", json={"prefix": "/"})
    assert (status, purged) == (200, {"purged": 2})
    _, stats, _ = await admin(proxy, "GET", "/cache/stats")
    assert stats["entries"] == 0
    seen = await fetch_many(proxy.port, "/k", 40)
    assert seen["MISS"] == 2 and origin.hits["/k"] == 4  # both memories were emptied

    status, health, _ = await admin(proxy, "GET", "/health")
    assert (status, health["status"], health["checks"]["upstream"]["status"]) == (
        200,
        "healthy",
        "up",
    )
    assert health["version"] == proxy_version  # the workers' one version, merged
    assert health["checks"]["upstream"]["latency_ms"] < 1000  # the slowest, not a sum
    circuits = {"status": "up", "upstreams": {"default": {"status": "up", "circuit": "closed"}}}
    assert health["checks"]["circuits"] == circuits

    # Ratios are recomputed from the summed counts, not added up.
    _, summary, _ = await admin(proxy, "GET", "/performance/cache")
    assert summary["hits"] + summary["misses"] > 0 and 0 <= summary["hit_rate"] <= 1
    # Both workers' requests, read from their metric files (written once a second).
    served = 0.0
    deadline = time.monotonic() + 5
    while served < 80 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as resp,
        ):
            text = await resp.text()
        served = sum(
            float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line.startswith("cacheproxy_requests_total{")
        )
    assert served >= 80


async def test_with_redis_a_response_cached_by_one_worker_is_a_hit_for_the_other(
    origin: Origin, proxy_process: Callable[..., ProxyProcess], redis_server: RedisServer
) -> None:
    proxy = proxy_process(
        origin.url,
        workers=2,
        redis={"url": redis_server.url},
        cache={"ttl": 60, "tiers": ["memory", "redis"]},
    )
    await workers_ready(proxy)
    seen = await fetch_many(proxy.port, "/shared", 40)
    assert origin.hits["/shared"] == 1
    assert seen["MISS"] == 1 and seen["shared"] == 1  # the other worker's first: from Redis
    _, stats, _ = await admin(proxy, "GET", "/cache/stats")
    assert stats["shared"]["hits"] == 1 and stats["shared"]["subscribed"] is True
    _, health, _ = await admin(proxy, "GET", "/health")
    assert health["status"] == "healthy" and health["checks"]["redis"]["status"] == "up"


async def test_the_admin_token_still_guards_everything_but_health(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, workers=2, admin={"token": TOKEN})
    await workers_ready(proxy, TOKEN)
    for path in ("/workers", "/cache/stats", "/listener/stats"):
        for token in (None, "wrong"):
            status, body, headers = await admin(proxy, "GET", path, token)
            assert (status, body["error"]) == (401, "unauthorized"), path
            assert "Bearer" in ", ".join(headers.getall("WWW-Authenticate"))
        assert (await admin(proxy, "GET", path, TOKEN))[0] == 200
    status, body, _ = await admin(proxy, "POST", "/cache/purge", json={"prefix": "/"})
    assert (status, body["error"]) == (401, "unauthorized")
    assert (await admin(proxy, "GET", "/health"))[0] == 200


async def test_sigterm_drains_every_worker_then_exits_0(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    origin.delay = 2.0
    proxy = proxy_process(origin.url, workers=2, shutdown_grace=5)
    workers = await workers_ready(proxy)
    async with fresh_connections() as http:
        pending: list[asyncio.Future[tuple[int, str]]] = []

        async def slow() -> tuple[int, str]:
            async with http.get(f"http://127.0.0.1:{proxy.port}/slow") as resp:
                return resp.status, await resp.text()

        async def open_connections() -> list[int]:  # each worker counts its own
            return [
                (await ask_worker(w["admin_socket"], "/listener/stats"))["open_connections"]
                for w in workers
            ]

        # Until a request is in flight on each worker.
        while True:
            pending.append(asyncio.ensure_future(slow()))
            await asyncio.sleep(0.1)
            open_ = await open_connections()
            if all(open_):
                break
            assert len(pending) < 15, open_
        # Every request's connection accepted before the signal (a sleep was not always
        # enough on a loaded machine: the last one's connect came after the port closed).
        deadline = time.monotonic() + 10
        while sum(open_) < len(pending):
            assert time.monotonic() < deadline, (open_, len(pending))
            await asyncio.sleep(0.05)
            open_ = await open_connections()
        proxy.proc.send_signal(signal.SIGTERM)
        responses = await asyncio.gather(*pending)
    assert responses == [(200, "body of /slow")] * len(pending)
    code = await asyncio.get_running_loop().run_in_executor(None, proxy.proc.wait, 15)
    assert code == 0
    assert all(gone(w["pid"]) for w in workers)
    assert not Path(workers[0]["admin_socket"]).parent.exists()  # the private socket dir


async def test_a_stuck_worker_cannot_hang_admin_and_a_killed_one_is_restarted(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, workers=2)
    first, second = await workers_ready(proxy)

    os.kill(second["pid"], signal.SIGSTOP)
    try:
        started = time.monotonic()
        status, health, _ = await admin(proxy, "GET", "/health")
        assert time.monotonic() - started < 5  # the per-worker timeout (2 s), not forever
    finally:
        os.kill(second["pid"], signal.SIGCONT)
    assert (status, health["status"]) == (200, "degraded")
    assert health["unanswered"] == [
        {"worker": 1, "pid": second["pid"], "error": "no answer within 2 s"}
    ]

    os.kill(first["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    seen_degraded = False
    while True:
        _, body, _ = await admin(proxy, "GET", "/workers")
        now = body["workers"][0]
        if now["ready"] and now["pid"] != first["pid"]:
            break
        assert time.monotonic() < deadline, body
        # Dead, waiting to restart (0.5 s), then starting: at least a second in all.
        _, health, _ = await admin(proxy, "GET", "/health")
        if health["status"] == "degraded":
            assert [u["worker"] for u in health["unanswered"]] == [0]
            seen_degraded = True
        await asyncio.sleep(0.05)
    assert seen_degraded
    assert now["restarts"] == 1 and parent_of(now["pid"]) == proxy.proc.pid
    assert (await fetch_many(proxy.port, "/after", 20)).total() == 20
    assert body["workers"][1] == second  # untouched


async def test_with_a_worker_silent_the_others_performance_ratios_are_recomputed_not_added(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, workers=3, cache={"ttl": 60})
    workers = await workers_ready(proxy)
    await fetch_many(proxy.port, "/k", 60)  # each worker: one miss, then hits
    served = []
    for w in workers:
        doc = await ask_worker(w["admin_socket"], "/performance/summary")
        served.append((doc["cache"]["hits"], w, doc))
    served.sort(key=lambda s: s[0])
    (_, silent, _), *responding = served
    # Two workers whose hit rates alone add up to more than 1.
    assert all(hits >= 2 and doc["cache"]["misses"] == 1 for hits, _, doc in responding)
    os.kill(silent["pid"], signal.SIGSTOP)
    try:
        status, summary, _ = await admin(proxy, "GET", "/performance/summary")
    finally:
        os.kill(silent["pid"], signal.SIGCONT)
    assert status == 200
    assert [u["worker"] for u in summary["unanswered"]] == [silent["worker"]]
    hits = sum(doc["cache"]["hits"] for _, _, doc in responding)
    cache = summary["cache"]
    assert (cache["hits"], cache["misses"]) == (hits, 2)
    assert cache["hit_rate"] == round(hits / (hits + 2), 4)
    one = responding[0][2]["window"]["raw_counts"]["latency_buckets"]
    assert len(summary["window"]["raw_counts"]["latency_buckets"]) == len(one)  # added, not joined


async def test_with_workers_alert_thresholds_are_the_configured_ones_not_their_sum(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    alerts = {"window": 30, "min_hit_rate": 0.5, "max_p99_ms": 250, "min_requests": 10}
    proxy = proxy_process(origin.url, workers=2, alerts=alerts)
    await workers_ready(proxy)
    status, doc, _ = await admin(proxy, "GET", "/alerts/active")
    assert status == 200
    assert doc["window_seconds"] == 30
    assert doc["thresholds"] == {
        "min_hit_rate": 0.5,
        "max_p99_ms": 250,
        "max_error_rate": None,
        "min_requests": 10,
    }


async def test_a_worker_whose_loop_hangs_is_killed_and_replaced(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, workers=2)
    first, second = await workers_ready(proxy)
    os.kill(second["pid"], signal.SIGSTOP)  # alive, holding its share of the port, silent
    deadline = time.monotonic() + 40  # 4 missed heartbeats of 2 s, each waited 2 s, + restart
    while True:
        _, body, _ = await admin(proxy, "GET", "/workers")
        now = body["workers"][1]
        if now["ready"] and now["pid"] != second["pid"]:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)
    assert gone(second["pid"]) and now["restarts"] == 1
    assert body["workers"][0] == first  # the one that responded was left alone
    assert (await fetch_many(proxy.port, "/after-hang", 20)).total() == 20


async def test_workers_whose_supervisor_is_killed_drain_and_exit_by_themselves(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, workers=2)
    workers = await workers_ready(proxy)
    proxy.proc.kill()  # no SIGTERM to pass on, no clean-up by the supervisor
    proxy.proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while not all(gone(w["pid"]) for w in workers):
        assert time.monotonic() < deadline, "orphaned workers still running"
        await asyncio.sleep(0.05)
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", proxy.port))
    assert not Path(workers[0]["admin_socket"]).parent.exists()  # the last one out tidied up


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def two_workers_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"upstream: {{url: 'http://127.0.0.1:{free_port()}'}}\nworkers: 2\n"
        f"listen: {{port: {port}}}\nadmin: {{port: {free_port()}}}\n"
    )
    return cfg


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "another-reuseport-group"])
def test_a_port_in_use_exits_1_before_starting_workers(tmp_path: Path, reuse_port: bool) -> None:
    # With SO_REUSEPORT, a second instance would otherwise bind the port and take a share.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run_cli("run", "--config", str(two_workers_config(tmp_path, taken.getsockname()[1])))
    assert done.returncode == 1, done
    assert "cannot start" in done.stderr and "address already in use" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_worker_that_cannot_start_ends_the_run_with_exit_1(tmp_path: Path) -> None:
    # Its admin socket (under TMPDIR) cannot be made: no restart loop, the reason and exit 1.
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    cfg = two_workers_config(tmp_path, free_port())
    started = time.monotonic()
    done = run_cli("run", "--config", str(cfg), env={"TMPDIR": str(deep)})
    assert done.returncode == 1, done
    assert "cannot start: worker 0: AF_UNIX path too long" in done.stderr
    assert time.monotonic() - started < 30
