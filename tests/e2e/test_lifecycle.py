"""Readiness apart from the upstream's health, SIGTERM's delay, environment overrides and the
figures of several workers: through `cacheproxy run` in processes of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import ROOT, Origin, ProxyProcess, free_port
from tests.e2e.test_workers import TOKEN, admin, ask_worker, workers_ready


async def state(proxy: ProxyProcess, path: str) -> tuple[int, Any]:
    status, body, _ = await admin(proxy, "GET", path)
    return status, body


async def until(check: Callable[[], Any], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not {what} within {within:g} s"
        await asyncio.sleep(0.05)


def accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def exit_code(proxy: ProxyProcess, within: float) -> int:
    return await asyncio.get_running_loop().run_in_executor(None, proxy.proc.wait, within)


async def get_once(port: int, path: str) -> int:
    """A GET on a new connection (a client the load balancer sent after the SIGTERM)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
        http.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        await resp.read()
        return resp.status


# --- one process -------------------------------------------------------------------------------


async def test_sigterm_turns_readyz_503_at_once_and_serves_the_delay_before_draining(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, shutdown_delay=3, shutdown_grace=2)
    assert await state(proxy, "/readyz") == (200, {"status": "ready"})
    assert await state(proxy, "/livez") == (200, {"status": "alive"})
    proxy.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    async def not_ready() -> bool:
        return (await state(proxy, "/readyz")) == (503, {"status": "draining"})

    await until(not_ready, 1.0, "unready")
    status, health = await state(proxy, "/health")
    assert (status, health["status"]) == (503, "draining")
    await asyncio.sleep(max(0.0, signalled + 1.0 - time.monotonic()))
    # A second into the delay, new connections are still served.
    assert await get_once(proxy.port, "/during-the-delay") == 200
    assert origin.hits["/during-the-delay"] == 1

    async def closed() -> bool:
        return not accepts(proxy.port)

    await until(closed, 6.0, "closed")
    assert time.monotonic() - signalled > 2.0  # not before the delay was (nearly) over
    assert await exit_code(proxy, 10) == 0
    assert proxy.proc.stdout is not None
    output = proxy.proc.stdout.read()
    assert "not ready: serving 3s more before draining" in output


async def test_sigint_skips_the_delay(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, shutdown_delay=60, shutdown_grace=1)
    assert await state(proxy, "/readyz") == (200, {"status": "ready"})
    proxy.proc.send_signal(signal.SIGINT)  # Ctrl-C at a terminal
    assert await exit_code(proxy, 10) == 0


async def test_sigint_cuts_a_delay_under_way_short(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, shutdown_delay=60, shutdown_grace=1)
    proxy.proc.send_signal(signal.SIGTERM)

    async def not_ready() -> bool:
        return (await state(proxy, "/readyz"))[0] == 503

    await until(not_ready, 2.0, "unready")
    proxy.proc.send_signal(signal.SIGTERM)  # another changes nothing...
    await asyncio.sleep(0.3)
    assert await get_once(proxy.port, "/still") == 200
    proxy.proc.send_signal(signal.SIGINT)  # ...Ctrl-C ends the wait
    assert await exit_code(proxy, 10) == 0


# --- several workers ---------------------------------------------------------------------------


async def test_with_workers_sigterm_turns_readyz_503_and_every_worker_serves_the_delay(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, workers=2, shutdown_delay=3, shutdown_grace=2)
    workers = await workers_ready(proxy)
    assert await state(proxy, "/readyz") == (200, {"status": "ready"})
    proxy.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    async def not_ready() -> bool:
        # Both workers are told too: the merged report says draining.
        health = await state(proxy, "/health")
        ready = await state(proxy, "/readyz")
        return ready == (503, {"status": "draining"}) and health[1]["status"] == "draining"

    await until(not_ready, 1.0, "unready")
    # 20 new connections: with one worker gone, 20 landing on the other would be a 1 in 2**19
    # chance; none is refused.
    assert [await get_once(proxy.port, "/during-the-delay") for _ in range(20)] == [200] * 20
    assert time.monotonic() - signalled < 3.0, "the delay was over before the check"
    for worker in workers:
        drained = await ask_worker(worker["admin_socket"], "/readyz")
        assert drained == {"status": "draining"}
    assert await exit_code(proxy, 15) == 0
    assert time.monotonic() - signalled > 2.5


async def test_with_workers_readyz_follows_the_workers_not_the_upstream(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, workers=2, upstream={"health_cache": 0})
    workers = await workers_ready(proxy)
    assert origin.upstream.runner is not None
    await origin.upstream.runner.cleanup()  # the API is down
    status, health, _ = await admin(proxy, "GET", "/health")
    assert (status, health["status"]) == (200, "degraded")
    assert health["checks"]["upstream"]["status"] == "down"
    assert await state(proxy, "/readyz") == (200, {"status": "ready"})

    for worker in workers:  # no worker left to serve the port: not ready
        os.kill(worker["pid"], signal.SIGKILL)
    seen: set[str] = set()

    async def back() -> bool:
        status, body = await state(proxy, "/readyz")
        seen.add(body["status"])
        return status == 200 and "no_workers" in seen

    await until(back, 20.0, "not ready, then ready again")


async def test_with_workers_gauges_merge_by_their_mode(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    release = asyncio.Event()

    async def held(_: Any) -> web.Response:  # in flight until the test is done
        await release.wait()
        return web.Response(text="late")

    origin.respond = held
    proxy = proxy_process(origin.url, workers=2, upstream={"pool": {"max_connections": 1}})
    workers = await workers_ready(proxy)
    pending: list[asyncio.Future[int]] = []
    started = time.monotonic()
    try:

        async def queued_in_each() -> bool:
            pending.append(asyncio.ensure_future(get_once(proxy.port, "/slow")))
            await asyncio.sleep(0.1)
            docs = [
                await ask_worker(w["admin_socket"], "/performance/connections") for w in workers
            ]
            return all(d["upstreams"][0]["queued"] >= 1 for d in docs)

        await until(queued_in_each, 5.0, "queued in both workers")
        # Each worker's first in the queue has waited over 4 s, and written it (once a second).
        await asyncio.sleep(max(0.0, started + 7.0 - time.monotonic()))
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{proxy.admin_port}/metrics") as resp,
        ):
            text = await resp.text()
        waited = time.monotonic() - started

        def value(name: str) -> float:
            (line,) = [x for x in text.splitlines() if x.startswith(name + "{")]
            return float(line.rpartition(" ")[2])

        # The oldest wait of either worker: no more than the test has waited. Their sum
        # would be more, each having waited over 4 s.
        oldest = value("cacheproxy_upstream_queue_oldest_seconds")
        assert 4.0 < oldest <= waited
        assert value("cacheproxy_upstream_circuit_open") == 0
        assert value("cacheproxy_upstream_limit") == 2  # one per worker: their pools add up
        assert value("cacheproxy_upstream_in_flight") == 2
    finally:
        release.set()
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def test_with_workers_a_revocation_is_counted_once(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(origin.url, workers=2)
    await workers_ready(proxy)
    before = time.time()
    status, body, _ = await admin(
        proxy, "POST", "/tokens/revoke", json={"token": "abc.def.ghi", "ttl": 3600}
    )
    assert status == 200 and body["revoked"] is True
    # The same list in each worker: one entry, expiring in an hour (not in two).
    assert body["count"] == 1
    assert before + 3600 - 1 <= body["expires_at"] <= time.time() + 3600 + 1
    status, body, _ = await admin(proxy, "GET", "/tokens/revoked/count")
    assert (status, body) == (200, {"count": 1})


# --- environment overrides -----------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CACHEPROXY_")}
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )


async def test_environment_overrides_win_over_the_file_and_unknown_ones_are_warned_of(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    env = {
        "CACHEPROXY_WORKERS": "2",  # the file says 1
        "CACHEPROXY_ADMIN__TOKEN": TOKEN,
        "CACHEPROXY_LISTEN_HOST": "0.0.0.0",  # one underscore: no key
    }
    proxy = proxy_process(origin.url, workers=1, env=env)
    assert len(await workers_ready(proxy, TOKEN)) == 2
    assert (await admin(proxy, "GET", "/cache/stats"))[0] == 401  # the token from the env
    proxy.proc.send_signal(signal.SIGTERM)
    assert await exit_code(proxy, 15) == 0
    assert proxy.proc.stdout is not None
    output = proxy.proc.stdout.read()
    assert "environment overrides: CACHEPROXY_ADMIN__TOKEN, CACHEPROXY_WORKERS" in output
    assert (
        "environment variable CACHEPROXY_LISTEN_HOST names no config key: ignored "
        "(did you mean CACHEPROXY_LISTEN__HOST?)"
    ) in output
    assert TOKEN not in output


def test_a_bad_override_exits_2_naming_the_variable_and_the_key(tmp_path: Any) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"listen: {{port: {free_port()}}}\nadmin: {{port: {free_port()}}}\n")
    env = {
        "CACHEPROXY_UPSTREAM__URL": "http://127.0.0.1:9",
        "CACHEPROXY_WORKERS": "lots-of-them",
        "CACHEPROXY_CACHE__TIERS": "memory",
        "CACHEPROXY_ADMIN__HOST": "0.0.0.0",
    }
    for command in ("run", "check-config"):
        done = run_cli(command, "--config", str(cfg), env=env)
        assert done.returncode == 2, done
        assert "workers: " in done.stderr and "CACHEPROXY_WORKERS" in done.stderr
        assert "lots-of-them" not in done.stderr
        assert "cache.tiers: CACHEPROXY_CACHE__TIERS must be JSON" in done.stderr
        # An open admin port without a token: the variable that sets one.
        assert "admin.host: " in done.stderr and "CACHEPROXY_ADMIN__TOKEN" in done.stderr
        assert "Traceback" not in done.stderr
    del env["CACHEPROXY_WORKERS"], env["CACHEPROXY_ADMIN__HOST"]
    env["CACHEPROXY_CACHE__TIERS"] = '["memory"]'
    done = run_cli("check-config", "--config", str(cfg), env=env)
    assert done.returncode == 0, done.stderr  # the file has no upstream: the env gave it
    assert "upstream http://127.0.0.1:9" in done.stdout


def test_an_unknown_log_level_exits_2_listing_the_levels(tmp_path: Any) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("upstream: {url: 'http://127.0.0.1:9'}\n")
    done = run_cli("run", "--config", str(cfg), "--log-level", "verbose", env={})
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    for level in ("DEBUG", "INFO", "WARNING", "ERROR"):
        assert level in done.stderr
