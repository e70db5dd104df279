"""Live config reload: SIGHUP and POST /config/reload swap routes without a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import aiohttp
import yaml

from proxy.config.loader import parse_config
from proxy.server.reload import effective, restart_required
from tests.conftest import (
    Origin,
    ProxyProcess,
    StartProxy,
    config_text,
    get,
)

TOKEN = "reload-secret"
KEPT = {"name": "kept", "match": {"prefix": "/kept/"}}
LATER_OFF = {"name": "later", "match": {"prefix": "/later/"}, "cache": False}
LATER_ON = {"name": "later", "match": {"prefix": "/later/"}}


def _config(upstream: str, **sections: Any) -> Any:
    return parse_config(config_text(upstream, **sections), env={})


# --- what needs a restart: pure ----------------------------------------------------------------


def test_restart_required_names_the_keys_and_keeps_their_running_values() -> None:
    running = _config("http://127.0.0.1:9000", cache={"ttl": 5}, routes=[KEPT])
    new = _config(
        "http://127.0.0.1:9001",
        listen={"port": 8123},
        cache={"ttl": 9, "max_memory": "1MB"},
        workers=3,
        routes=[KEPT, LATER_ON],
    )
    assert restart_required(running, new) == [
        "listen.port",
        "workers",
        "upstream",
        "cache.max_memory",
    ]
    now = effective(running, new)
    assert (now.listen.port, now.workers, now.upstream.url) == (0, 1, "http://127.0.0.1:9000")
    assert now.cache is not None and now.cache.max_memory == running.cache.max_memory
    assert now.cache.ttl == 9 and len(now.routes) == 2  # the live part is the new file's
    assert restart_required(now, now) == []


# --- in a process of the test's own --------------------------------------------------------------


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, dict[str, str]]:
    """One request on a kept-alive connection: its status and headers (body read and dropped)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}
    await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers


async def test_reload_swaps_routes_keeps_entries_and_connections(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, cache={"ttl": 60}, routes=[KEPT, LATER_OFF])
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.proxy_port)
    try:
        assert (await _exchange(reader, writer, "/kept/a"))[1]["x-cache"] == "MISS"
        assert (await _exchange(reader, writer, "/later/x"))[1]["x-cache"] == "BYPASS"

        new = _config(origin.url, cache={"ttl": 60}, routes=[KEPT, LATER_ON])
        assert proxy.apply(new) == {"reloaded": True, "restart_required": [], "errors": []}

        # The same client connection, still open, now sees the new table...
        assert (await _exchange(reader, writer, "/later/x"))[1]["x-cache"] == "MISS"
        assert (await _exchange(reader, writer, "/later/x"))[1]["x-cache"] == "HIT"
        # ...and the entry of a route that is still there was kept.
        status, headers = await _exchange(reader, writer, "/kept/a")
        assert (status, headers["x-cache"]) == (200, "HIT")
        assert origin.hits["/kept/a"] == 1
    finally:
        writer.close()
    resp, _ = await get(http, proxy, "/kept/a")
    assert resp.headers["X-Cache"] == "HIT"


async def test_reload_keeps_the_per_user_key_secret(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    """No cache.key_secret: the process's own random one must survive, or entries are lost."""
    private = {"name": "me", "match": {"prefix": "/me/"}, "cache": {"per_user": True}}
    proxy = await start_proxy(origin.url, cache={"ttl": 60}, routes=[private])
    auth = {"Authorization": "Bearer alice"}
    assert (await get(http, proxy, "/me/x", headers=auth))[0].headers["X-Cache"] == "MISS"
    proxy.apply(_config(origin.url, cache={"ttl": 60}, routes=[private, KEPT]))
    assert (await get(http, proxy, "/me/x", headers=auth))[0].headers["X-Cache"] == "HIT"


async def test_a_reload_keeps_the_windows_of_limits_that_did_not_change(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    def limited(name: str, rate: str) -> dict[str, Any]:
        return {"name": name, "match": {"prefix": f"/{name}"}, "rate_limit": {"limits": [rate]}}

    login, search = limited("login", "3/minute"), limited("search", "2/minute")
    proxy = await start_proxy(origin.url, routes=[login, search])
    for path in ("/login", "/login", "/login", "/search", "/search"):
        assert (await get(http, proxy, path))[0].status == 200

    # A reload that changes another route and the search limit, and adds a route.
    faster = {**search, "rate_limit": {"limits": ["4/minute"]}}
    other = {"name": "other", "match": {"prefix": "/other"}, "cache": False}
    text = config_text(origin.url, routes=[login, faster, other])
    proxy.apply(parse_config(text, env={}))

    assert (await get(http, proxy, "/login"))[0].status == 429  # its count was kept
    statuses = [(await get(http, proxy, "/search"))[0].status for _ in range(5)]
    assert statuses == [200] * 4 + [429]


async def test_admin_reload_without_a_file_is_refused(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url)
    async with http.post(f"http://127.0.0.1:{proxy.admin_port}/config/reload") as resp:
        assert resp.status == 422
        assert (await resp.json())["reloaded"] is False


# --- a real process, as users run it --------------------------------------------------------------


def _write(proc: ProxyProcess, upstream: str, **sections: Any) -> None:
    text = config_text(upstream, **sections)
    data = yaml.safe_load(text)
    data["listen"]["port"], data["admin"]["port"] = proc.port, proc.admin_port
    for key in ("listen", "admin"):
        data[key] = {**data[key], **sections.get(key, {})}
    proc.config.write_text(yaml.safe_dump(data))


async def _x_cache(http: aiohttp.ClientSession, port: int, path: str) -> str:
    async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
        await resp.read()
        return resp.headers["X-Cache"]


async def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within 10 s: {what}")


async def test_sighup_and_admin_reload_in_a_process(
    origin: Origin,
    proxy_process: Any,
    http: aiohttp.ClientSession,
) -> None:
    admin = {"token": TOKEN}
    proc: ProxyProcess = proxy_process(
        origin.url, admin=admin, cache={"ttl": 60}, routes=[KEPT, LATER_OFF]
    )
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    reload_url = f"http://127.0.0.1:{proc.admin_port}/config/reload"
    assert await _x_cache(http, proc.port, "/kept/a") == "MISS"
    assert await _x_cache(http, proc.port, "/later/x") == "BYPASS"

    # SIGHUP: the route starts caching; the other route's entry is still there.
    _write(proc, origin.url, admin=admin, cache={"ttl": 60}, routes=[KEPT, LATER_ON])
    os.kill(proc.proc.pid, signal.SIGHUP)

    async def later_cached() -> bool:
        return await _x_cache(http, proc.port, "/later/x") != "BYPASS"

    await _until(later_cached, "SIGHUP applied the new routes")
    assert await _x_cache(http, proc.port, "/kept/a") == "HIT"

    # A broken file: every problem in the response (and logged), the running config kept.
    proc.config.write_text(
        yaml.safe_dump(
            {
                "listen": {"port": proc.port, "prot": 1},
                "upstream": {"url": "ftp://x"},
                "admin": {"port": proc.admin_port, "token": TOKEN},
            }
        )
    )
    async with http.post(reload_url) as resp:
        assert resp.status == 401  # the token guards it
    async with http.post(reload_url, headers=bearer) as resp:
        assert resp.status == 422
        body = await resp.json()
    assert body["reloaded"] is False
    assert [e.split(":")[0] for e in body["errors"]] == ["listen.prot", "upstream.url"]
    assert await _x_cache(http, proc.port, "/later/x") == "HIT"

    # Keys only a restart applies are named, and their running values kept.
    _write(
        proc,
        origin.url,
        admin=admin,
        cache={"ttl": 60, "max_memory": "1MB"},
        routes=[KEPT, LATER_OFF],
        shutdown_grace=3,
    )
    async with http.post(reload_url, headers=bearer) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body == {
        "reloaded": True,
        "restart_required": ["cache.max_memory", "shutdown_grace"],
        "errors": [],
    }
    assert await _x_cache(http, proc.port, "/later/x") == "BYPASS"

    proc.proc.send_signal(signal.SIGTERM)
    output = proc.proc.communicate(timeout=15)[0]
    assert "config reload refused, old config kept" in output
    assert "listen.prot: unknown key" in output
    assert "restart required to apply cache.max_memory, shutdown_grace" in output


async def test_every_worker_reloads(
    origin: Origin,
    proxy_process: Any,
    http: aiohttp.ClientSession,
) -> None:
    proc: ProxyProcess = proxy_process(origin.url, workers=2, cache={"ttl": 60}, routes=[KEPT])
    admin = f"http://127.0.0.1:{proc.admin_port}"
    workers: list[dict[str, Any]] = []

    async def all_ready() -> bool:  # the port responds once the first worker serves
        nonlocal workers
        async with http.get(f"{admin}/workers") as resp:
            workers = (await resp.json())["workers"]
        return all(w["ready"] for w in workers)

    await _until(all_ready, "both workers serving")
    sockets = [w["admin_socket"] for w in workers]

    async def ttls(socket_path: str) -> dict[str, float]:
        connector = aiohttp.UnixConnector(socket_path)
        async with (
            aiohttp.ClientSession(connector=connector) as one,
            one.get("http://worker/performance/cache") as resp,
        ):
            return dict((await resp.json())["ttl_seconds"])

    assert [await ttls(s) for s in sockets] == [{"default": 60, "kept": 60}] * 2

    extra = {"name": "extra", "match": {"prefix": "/extra/"}, "cache": {"ttl": 7}}
    _write(proc, origin.url, workers=2, cache={"ttl": 60}, routes=[KEPT, extra])
    async with http.post(f"{admin}/config/reload") as resp:
        assert resp.status == 200
        # One list, not one per worker.
        assert await resp.json() == {"reloaded": True, "restart_required": [], "errors": []}
    assert [await ttls(s) for s in sockets] == [{"default": 60, "kept": 60, "extra": 7}] * 2

    # SIGHUP to the supervisor reaches every worker.
    _write(proc, origin.url, workers=2, cache={"ttl": 60}, routes=[extra])

    async def both_reloaded() -> bool:
        return [await ttls(s) for s in sockets] == [{"default": 60, "extra": 7}] * 2

    os.kill(proc.proc.pid, signal.SIGHUP)
    await _until(both_reloaded, "every worker reloaded on SIGHUP")
