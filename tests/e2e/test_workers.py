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
import orjson
import pytest

from proxy.admin.merge import Answer, Unanswered, merge_answers, merge_json, parse_rules
from proxy.config.loader import MAX_WORKERS, ConfigError, parse_config, usable_cpus
from proxy.server.workers import RESTART_MAX, describe_exit, restart_delay
from tests.conftest import ROOT, Origin, ProxyProcess, free_port
from tests.redis_servers import RedisServer

TOKEN = "s3cret-admin-token"

# --- pure: merging the workers' admin answers -----------------------------------------------


def test_numbers_add_up_and_objects_merge_key_by_key() -> None:
    a = {"hits": 3, "bytes": 1.5, "shared": {"hits": 1, "subscribed": True}, "only_a": 7}
    b = {"hits": 4, "bytes": 2.0, "shared": {"hits": 2, "subscribed": True}, "only_b": [1]}
    assert merge_json([a, b], {}) == {
        "hits": 7,
        "bytes": 3.5,
        "shared": {"hits": 3, "subscribed": True},
        "only_a": 7,
        "only_b": [1],
    }


def test_status_takes_the_worst_booleans_all_lists_concatenate_strings_the_first() -> None:
    docs = [
        {"status": "healthy", "ok": True, "items": [1], "name": "a", "checks": {"status": "up"}},
        {
            "status": "degraded",
            "ok": True,
            "items": [2, 3],
            "name": "b",
            "checks": {"status": "up"},
        },
        {"status": "healthy", "ok": False, "items": [], "name": "c", "checks": {"status": "down"}},
    ]
    assert merge_json(docs, {}) == {
        "status": "degraded",
        "ok": False,
        "items": [1, 2, 3],
        "name": "a",
        "checks": {"status": "down"},
    }
    assert merge_json(["healthy", "unhealthy", "degraded"], {}, "status") == "unhealthy"


def test_an_upstream_whose_circuit_one_worker_opened_is_down_in_the_merged_health() -> None:
    # Each worker has its own breakers: the answer must not hide the one that opened.
    def health(circuit: str) -> dict[str, Any]:
        up = "up" if circuit == "closed" else "down"
        upstreams = {"default": {"status": up, "circuit": circuit}}
        return {"status": "healthy", "checks": {"upstream": {"status": up, "upstreams": upstreams}}}

    merged = merge_json([health("closed"), health("open")], {})
    assert merged["checks"]["upstream"]["status"] == "down"
    assert merged["checks"]["upstream"]["upstreams"]["default"]["status"] == "down"


def test_nulls_never_hide_a_value_and_mixed_types_take_the_first() -> None:
    assert merge_json([None, "redis down", None], {}) == "redis down"
    assert merge_json([{"error": None}, {"error": "timeout"}], {}) == {"error": "timeout"}
    assert merge_json([None, None], {}) is None
    assert merge_json([1, "x"], {}) == 1
    assert merge_json([True, 1], {}) is True  # a boolean is not a number to add


def test_the_merge_header_sets_per_key_rules() -> None:
    rules = parse_rules("count=max, oldest = MIN,name=first, bad, x=avg, =sum")
    assert rules == {"count": "max", "oldest": "min", "name": "first"}
    docs = [
        {"count": 5, "oldest": 10, "n": {"count": 2}},
        {"count": 5, "oldest": 4, "n": {"count": 9}},
    ]
    assert merge_json(docs, rules) == {"count": 5, "oldest": 4, "n": {"count": 9}}


def _answer(status: int, doc: Any, **headers: str) -> Answer:
    return Answer(status, "application/json", orjson.dumps(doc), headers)


def test_the_worst_status_wins_with_its_headers_and_the_merge_header_is_dropped() -> None:
    ok = _answer(200, {"purged": 2}, **{"Cacheproxy-Merge": "purged=sum"})
    failed = _answer(503, {"purged": 1, "error": "purge_incomplete"}, **{"Retry-After": "1"})
    merged = merge_answers("POST", [ok, failed], [])
    assert merged.status == 503
    assert orjson.loads(merged.body) == {"purged": 3, "error": "purge_incomplete"}
    assert merged.headers == [("Retry-After", "1")]
    merged = merge_answers("GET", [ok, ok], [])
    assert (merged.status, merged.headers) == (200, [])


def test_a_worker_that_did_not_answer_is_named_and_degrades_a_status() -> None:
    health = _answer(200, {"status": "healthy", "checks": {}})
    late = Unanswered(1, 4242, "no answer within 3 s")
    merged = merge_answers("GET", [health], [late])
    assert merged.status == 200
    assert orjson.loads(merged.body) == {
        "status": "degraded",
        "checks": {},
        "unanswered": [{"worker": 1, "pid": 4242, "error": "no answer within 3 s"}],
    }
    # A change that did not reach every worker is incomplete, whatever the others said.
    merged = merge_answers("POST", [_answer(200, {"purged": 1})], [late])
    assert merged.status == 503
    assert orjson.loads(merged.body)["error"] == "incomplete"
    # No answer at all.
    merged = merge_answers("GET", [], [late])
    assert merged.status == 503
    assert orjson.loads(merged.body)["status"] == "unhealthy"


def test_answers_that_are_not_json_pass_when_identical_and_are_refused_otherwise() -> None:
    page = Answer(200, "text/html; charset=utf-8", b"<h1>cacheproxy</h1>", {})
    assert merge_answers("GET", [page, page], []).body == page.body
    assert merge_answers("GET", [page, page], []).content_type == page.content_type
    metrics = [Answer(200, "text/plain", f"requests {n}\n".encode(), {}) for n in (3, 4)]
    merged = merge_answers("GET", metrics, [])
    assert merged.status == 502
    assert orjson.loads(merged.body)["error"] == "not_mergeable"
    broken = Answer(200, "application/json", b"{not json", {})
    assert merge_answers("GET", [broken, _answer(200, {})], []).status == 502


def test_restart_delays_grow_and_are_bounded() -> None:
    delays = [restart_delay(n) for n in range(1, 12)]
    assert delays[0] == 0.5 and delays == sorted(delays) and delays[-1] == RESTART_MAX
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(1) == "exited with code 1"


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
            return body["workers"]  # type: ignore[no-any-return]
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

        # Until a request is in flight on each worker (each counts its own connections).
        while True:
            pending.append(asyncio.ensure_future(slow()))
            await asyncio.sleep(0.1)
            open_ = [
                (await ask_worker(w["admin_socket"], "/listener/stats"))["open_connections"]
                for w in workers
            ]
            if all(open_):
                break
            assert len(pending) < 15, open_
        await asyncio.sleep(0.1)  # the last connection is accepted too: none is left queued
        proxy.proc.send_signal(signal.SIGTERM)
        answers = await asyncio.gather(*pending)
    assert answers == [(200, "body of /slow")] * len(pending)
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
    assert body["workers"][0] == first  # the one that answered was left alone
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
