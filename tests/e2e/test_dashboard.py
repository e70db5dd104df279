"""The dashboard in a real headless Chromium (Debian's `chromium` + `chromium-driver`).

No network beyond loopback: the page must load everything from the admin listener. The
screenshot is kept in tests/artifacts/ (not committed) for people to look at.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy import __version__
from proxy.admin import dashboard
from proxy.observe.stats_window import Totals, describe
from proxy.server.app import ProxyServer
from tests.conftest import ROOT, Origin, StartProxy, StartUpstream, free_port, get
from tests.redis_servers import RedisServer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
ARTIFACTS = ROOT / "tests" / "artifacts"


def _browser() -> Any:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            pytest.fail(f"{binary} is missing: the dashboard test needs it ({INSTALL})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1440,900",  # a laptop screen
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",  # nothing but the page itself
        "--disable-component-update",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _wait(driver: Any, script: str, within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        assert time.monotonic() < deadline, f"not true within {within} s: {script}"
        time.sleep(0.05)


def _values(driver: Any) -> dict[str, str]:
    ids: tuple[str, ...] = ("hit-rate", "hits", "misses", "requests", "p50", "p99", "avg-cached")
    ids += ("avg-uncached", "speedup", "entries", "pool-max", "lookups", "alerts", "health")
    script = (
        "return Object.fromEntries(arguments[0].map("
        "id => [id, document.getElementById(id).dataset.value]))"
    )
    return driver.execute_script(script, list(ids))


async def _summary(http: aiohttp.ClientSession, proxy: ProxyServer) -> dict[str, Any]:
    url = f"http://127.0.0.1:{proxy.admin_port}/performance/summary"
    async with http.get(url, headers={"Accept-Encoding": "identity"}) as resp:
        return await resp.json()


def _number(text: str) -> float | None:
    return float(text) if text else None


async def test_the_dashboard_shows_the_summary_and_follows_the_traffic(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    origin.delay = 0.03
    proxy = await start_proxy(
        origin.url,
        cache={"ttl": 60},
        routes=[{"name": "quotes", "match": {"prefix": "/api/quotes/"}}],
        alerts={"min_hit_rate": 0.9, "min_requests": 5},
    )
    for path in ("/api/quotes/A", "/api/quotes/B", "/api/quotes/C", *["/api/quotes/A"] * 7):
        await get(http, proxy, path)

    def run(call: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(call, *args)  # the proxy runs on this loop: never block it

    driver = await run(_browser)
    try:
        await run(driver.get, f"http://127.0.0.1:{proxy.admin_port}/dashboard?interval=500")
        await run(_wait, driver, "return document.body.dataset.polls >= 2")
        shown = await run(_values, driver)
        summary = await _summary(http, proxy)
        cache, rt = summary["cache"], summary["response_times"]
        assert (shown["hits"], shown["misses"], shown["requests"]) == ("7", "3", "10")
        assert _number(shown["hit-rate"]) == cache["hit_rate"] == 0.7
        assert _number(shown["entries"]) == cache["entries"] == 3
        assert _number(shown["lookups"]) == 10
        for field, key in (("p50", "p50_ms"), ("p99", "p99_ms"), ("speedup", "speedup")):
            assert _number(shown[field]) == rt[key], field
        assert _number(shown["avg-cached"]) == rt["avg_cached_ms"]
        assert _number(shown["avg-uncached"]) == rt["avg_uncached_ms"]
        assert _number(shown["pool-max"]) == summary["connections"]["max_connections"]
        assert (shown["health"], shown["alerts"]) == ("healthy", "1")  # 0.7 < 0.9
        text = await run(lambda: driver.find_element("tag name", "body").text)
        # As the threshold is written: a percentage, not "0.70 below 0.90".
        assert "70.0%" in text and "hit rate 70.0% below 90%" in text
        assert "hit rate ≥ 90%" in text
        off = await run(lambda: driver.find_element("id", "rl-off").text)
        assert off.startswith("not configured")  # no rate_limit section: not zeros
        assert (
            await run(
                driver.execute_script, "return document.getElementById('rl-limited').dataset.value"
            )
            == ""
        )

        for _ in range(5):  # more traffic: the page follows
            await get(http, proxy, "/api/quotes/B")
        await run(_wait, driver, "return document.getElementById('hits').dataset.value === '12'")
        await run(
            _wait, driver, "return document.getElementById('hit-rate').textContent === '80.0%'"
        )
        await asyncio.sleep(1.2)  # a couple more points on the charts for the screenshot
        shot = tmp_path / "dashboard.png"
        assert await run(driver.save_screenshot, str(shot))
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "dashboard-healthy.png")

        problems = [
            entry
            for entry in await run(driver.get_log, "browser")
            if entry["level"] in ("SEVERE", "WARNING")
        ]
        assert problems == []
        # Every request the page made went to the admin listener itself.
        origins = await run(
            driver.execute_script,
            "return [...new Set(performance.getEntriesByType('resource')"
            ".map(e => new URL(e.name).origin))]",
        )
        assert origins == [f"http://127.0.0.1:{proxy.admin_port}"]
    finally:
        await run(driver.quit)


async def test_the_dashboard_shows_rate_limit_checks_redis_could_not_decide(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    proxy = await start_proxy(
        origin.url,
        redis={"url": redis_server.url, "timeout": 1},
        rate_limit={"limits": ["100/minute"], "on_store_error": "local"},
    )
    redis_server.stop()
    for _ in range(3):
        resp, _ = await get(http, proxy, "/a")
        assert resp.status == 200  # limited per process meanwhile

    def run(call: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(call, *args)

    driver = await run(_browser)
    try:
        await run(driver.get, f"http://127.0.0.1:{proxy.admin_port}/dashboard?interval=500")
        await run(_wait, driver, "return document.body.dataset.polls >= 1")
        errors = "document.getElementById('rl-store-errors')"
        assert await run(driver.execute_script, f"return {errors}.dataset.value") == "3"
        assert await run(driver.execute_script, f"return {errors}.className") == "warn"
        checks = (await run(lambda: driver.find_element("id", "checks").text)).lower()
        assert "rate_limits" in checks and "limited per on_store_error" in checks
    finally:
        await run(driver.quit)


def _card_texts(driver: Any) -> dict[str, str]:
    """Each KPI card's and chart card's title, by the id of a value it shows."""
    script = (
        "return Object.fromEntries(arguments[0].map(id => {"
        " const card = document.getElementById(id).closest('.kpi, .card');"
        " return [id, card.querySelector('h2, h3').textContent]; }))"
    )
    ids = ["hit-rate", "requests", "errors", "p50", "speedup", "reuse", "avg-failed", "rl-limited"]
    return driver.execute_script(script, ids)


async def test_cards_titled_last_60_s_show_the_window_and_the_rest_say_since_start(
    start_upstream: StartUpstream,
) -> None:
    """The page against an admin API scripted so that the last minute and the totals since
    start differ: every card's numbers must be the ones its title names."""
    window = describe(
        Totals(
            requests=60,
            hits=40,
            misses=10,
            errors=3,
            cached=40,
            cached_seconds=40 * 0.0004,
            uncached=7,
            uncached_seconds=7 * 0.08,
            failed=3,
            failed_seconds=3 * 5.0,
        ),
        60.0,
    )
    summary = {
        "uptime_seconds": 3600,
        "requests": 1000,  # since start
        "errors": 50,
        "cache": {
            "hits": 700,
            "misses": 250,
            "hit_rate": 0.7368,
            "lookups": {"hit": 700},
            "entries": 3,
            "bytes": 10,
            "max_bytes": 100,
            "evictions": 0,
        },
        "connections": {
            "max_connections": 10,
            "active": 0,
            "idle": 0,
            "total_requests": 3,
            "opened": 0,
            "reuse_rate": None,
        },  # the upstream was never reached
        "response_times": window["response_times"],
        "window": window,
        "rate_limit": {"allowed": 990, "limited": 10},
        "alerts": 0,
    }
    alerts = {"window_seconds": 60, "thresholds": {}, "active": []}
    health = {"status": "degraded", "checks": {}}

    def canned(doc: dict[str, Any]) -> Any:
        async def handler(_: web.Request) -> web.Response:
            return web.json_response(doc)

        return handler

    app = web.Application()
    app.router.add_get("/dashboard", dashboard.page)
    app.router.add_get("/dashboard/{name}", dashboard.asset)
    app.router.add_get("/performance/summary", canned(summary))
    app.router.add_get("/alerts/active", canned(alerts))
    app.router.add_get("/health", canned(health))
    admin = await start_upstream(app)

    def run(call: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(call, *args)

    driver = await run(_browser)
    try:
        await run(driver.get, f"{admin.url}/dashboard?interval=500")
        await run(_wait, driver, "return document.body.dataset.polls >= 1")
        titles = await run(_card_texts, driver)
        value = "return document.getElementById(arguments[0]).dataset.value"
        shown = {i: await run(driver.execute_script, value, i) for i in titles}
        assert "last 60 s" in titles["requests"] and "last 60 s" in titles["errors"]
        assert (shown["requests"], shown["errors"]) == ("60", "3")  # not 1000 and 50
        assert "last 60 s" in titles["p50"] and "last 60 s" in titles["speedup"]
        assert "since start" in titles["hit-rate"] and shown["hit-rate"] == "0.7368"
        assert "since start" in titles["rl-limited"] and shown["rl-limited"] == "10"
        reuse = await run(lambda: driver.find_element("id", "reuse").text)
        assert shown["reuse"] == "" and reuse == "\u2013"  # no connection opened: not "100%"
        # The three 5 s timeouts are shown apart, not averaged into the uncached 80 ms.
        assert "last 60 s" in titles["avg-failed"] and shown["avg-failed"] == "5000"
        assert await run(driver.execute_script, value, "avg-uncached") == "80"
        note = await run(lambda: driver.find_element("id", "failed-note").text)
        assert note.startswith("3 failed")
    finally:
        await run(driver.quit)


async def test_the_dashboard_opened_with_the_token_in_its_url_polls(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    """`http://admin:TOKEN@host/dashboard`: Chromium refuses fetch() to a URL that carries
    credentials, and a relative URL on such a page does; the page must poll all the same."""
    token = "s3cret-token"
    proxy = await start_proxy(origin.url, admin={"token": token})
    await get(http, proxy, "/a")

    def run(call: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(call, *args)

    driver = await run(_browser)
    try:
        url = f"http://admin:{token}@127.0.0.1:{proxy.admin_port}/dashboard?interval=500"
        await run(driver.get, url)
        await run(_wait, driver, "return document.body.dataset.polls >= 2")
        shown = await run(_values, driver)
        assert shown["requests"] == "1" and shown["health"] == "healthy"
        status = await run(lambda: driver.find_element("id", "status").text)
        assert "⚠" not in status
    finally:
        await run(driver.quit)


async def test_the_dashboard_without_the_token_says_how_to_log_in(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    start_upstream: StartUpstream,
) -> None:
    """Refused, the page says how to log in: a browser asking for /dashboard gets a page that
    says so (still a 401 with both challenges, JSON for anything else), and a page whose
    polls are refused says it instead of "HTTP 401"."""
    token = "s3cret-token"
    proxy = await start_proxy(origin.url, admin={"token": token})
    url = f"http://127.0.0.1:{proxy.admin_port}/dashboard"
    async with http.get(url, headers={"Accept": "text/html,*/*"}) as resp:
        assert resp.status == 401 and resp.content_type == "text/html"
        assert 'Basic realm="cacheproxy-admin"' in resp.headers.getall("WWW-Authenticate")
        text = await resp.text()
    assert f"http://admin:TOKEN@127.0.0.1:{proxy.admin_port}/dashboard" in text
    async with http.get(url, headers={"Accept": "application/json"}) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"] == "unauthorized"

    async def refused(_: web.Request) -> web.Response:
        return web.json_response({"error": "unauthorized"}, status=401)

    app = web.Application()
    app.router.add_get("/dashboard", dashboard.page)
    app.router.add_get("/dashboard/{name}", dashboard.asset)
    for path in ("/performance/summary", "/alerts/active", "/health"):
        app.router.add_get(path, refused)
    admin = await start_upstream(app)

    def run(call: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(call, *args)

    driver = await run(_browser)
    try:
        await run(driver.get, f"{admin.url}/dashboard?interval=500")
        status = "return document.getElementById('status').textContent"
        shown = await run(_wait, driver, status)
        assert "admin token required" in shown and "http://admin:TOKEN@" in shown
    finally:
        await run(driver.quit)


async def test_the_dashboard_says_what_is_wrong_by_name_with_history_from_the_server(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """The issue's scene: one route's upstream down (its circuit open), a rate limit firing,
    the 5xx alert raised. The page names them, shows the alert as its threshold is written,
    and its charts are full from the server's history as soon as it opens. Saves the
    screenshot the issue asks for (tests/artifacts/dashboard.png)."""
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proxy = await start_proxy(
        origin.url,
        upstream={
            "url": origin.url,
            "retries": 0,
            "circuit_breaker": {"min_requests": 3, "window": 10, "reset_after": 60},
        },
        cache={"ttl": 60},
        routes=[
            {"name": "quotes", "match": {"prefix": "/api/quotes/"}},
            {"name": "orders", "match": {"prefix": "/api/orders/"}, "upstream": dead},
            {
                "name": "search",
                "match": {"prefix": "/api/search"},
                "rate_limit": {"limits": ["3/minute"]},
            },
        ],
        alerts={"max_error_rate": 0.02, "min_requests": 5},
    )

    async def traffic() -> list[int]:
        statuses = []
        for path in ("/api/quotes/A", "/api/quotes/B", "/api/quotes/A", "/api/orders/1"):
            resp, _ = await get(http, proxy, path)
            statuses.append(resp.status)
        for _ in range(2):
            resp, _ = await get(http, proxy, "/api/search?q=x")
            statuses.append(resp.status)
        return statuses

    # Traffic over two history steps (5 s each), so the charts have points when the page opens.
    seen: list[int] = []
    deadline = time.monotonic() + 20
    while True:
        seen += await traffic()
        summary = await _summary(http, proxy)
        if len(summary["history"]["t"]) >= 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    history = summary["history"]
    assert len(history["t"]) >= 2 and history["step_seconds"] == 5
    assert sum(history["requests"]) >= 6 and sum(history["rate_limited"]) >= 1
    assert 502 in seen and 503 in seen and 429 in seen  # the circuit opened, the limit fired
    by_route = summary["routes"]["by_route"]
    assert by_route["orders"]["errors_5xx"] > 0 and by_route["quotes"]["errors_5xx"] == 0
    assert summary["rate_limit"]["configured"] is True

    def run(call: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(call, *args)

    driver = await run(_browser)
    try:
        await run(driver.get, f"http://127.0.0.1:{proxy.admin_port}/dashboard?interval=500")
        await run(_wait, driver, "return document.body.dataset.polls >= 1")
        # The first poll draws the whole history: nothing to wait for.
        points = await run(driver.execute_script, "return document.body.dataset.historyPoints")
        assert int(points) >= 2
        await run(_wait, driver, "return document.getElementById('alerts').dataset.value === '1'")
        problems = await run(lambda: driver.find_element("id", "problems").text)
        assert f'upstream "orders" ({dead}): circuit open' in problems
        assert 'route "orders" failing' in problems and 'route "quotes" failing' not in problems
        assert 'route "search":' in problems and "refused by rate limits (429)" in problems
        assert "alert: 5xx rate" in problems and "above 2%" in problems
        alerts = await run(lambda: driver.find_element("id", "alerts").text)
        assert "above 2%" in alerts and "0.0" not in alerts.split("above")[0]
        checks = await run(lambda: driver.find_element("id", "checks").text)
        assert "orders: open" in checks
        failing = await run(
            driver.execute_script,
            "return [...document.querySelectorAll('#routes tr.failing')].map(r => r.dataset.route)",
        )
        assert failing == ["orders"]
        header = await run(lambda: driver.find_element("tag name", "header").text)
        assert socket.gethostname() in header and __version__ in header
        assert await run(lambda: driver.find_element("id", "rl-off").is_displayed()) is False
        # Legends show the newest values without hovering (uPlot's shows "--" otherwise).
        legend = await run(
            lambda: driver.find_element("css selector", "#chart-traffic .u-legend").text
        )
        assert "/s" in legend

        await asyncio.sleep(1.0)  # a few polls on the per-poll charts too
        await run(driver.set_window_size, 1440, 1600)  # the whole page, every card
        await asyncio.sleep(0.6)
        shot = tmp_path / "dashboard.png"
        assert await run(driver.save_screenshot, str(shot))
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "dashboard.png")
        problems_logged = [
            entry
            for entry in await run(driver.get_log, "browser")
            if entry["level"] == "SEVERE" and "/dashboard" in entry["message"]
        ]
        assert problems_logged == []
    finally:
        await run(driver.quit)


async def test_the_dashboard_shows_each_upstream_target_and_names_one_left_out(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
) -> None:
    """Two targets, one dead: its requests are retried on the other, it is ejected, and the
    page's targets table and its list of what is wrong both say so by name."""
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proxy = await start_proxy(
        origin.url,
        upstream={
            "url": None,
            "targets": [dead, origin.url],
            "ejection": {"consecutive_failures": 2, "base_time": "60s"},
        },
    )
    for i in range(6):
        resp, _ = await get(http, proxy, f"/t/{i}")
        assert resp.status == 200

    def run(call: Callable[..., Any], *args: Any) -> Any:
        return asyncio.to_thread(call, *args)

    driver = await run(_browser)
    try:
        await run(driver.get, f"http://127.0.0.1:{proxy.admin_port}/dashboard?interval=500")
        await run(_wait, driver, "return document.body.dataset.polls >= 1")
        rows = await run(
            driver.execute_script,
            "return [...document.querySelectorAll('#targets tbody tr')]"
            ".map(r => [r.dataset.target, r.className, r.cells[1].textContent])",
        )
        assert [r[0] for r in rows] == ["default[0]", "default[1]"]
        assert rows[0][1] == "failing" and rows[0][2].startswith("ejected ")
        assert rows[1][1:] == ["", "in"]
        problems = await run(lambda: driver.find_element("id", "problems").text)
        assert f'upstream target "default[0]" ({dead}): left out of the balancing' in problems
    finally:
        await run(driver.quit)
