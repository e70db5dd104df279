"""Several upstream targets, through a running proxy, against real upstreams on loopback:
each balancer's distribution, a target killed under load, Host lines, the figures."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

from proxy.config.loader import parse_config
from proxy.server.app import ProxyServer
from tests.conftest import StartProxy, StartUpstream, Upstream, config_text, url_of


class Target:
    """A named upstream target: answers with its name, counts what it got, can be killed."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.got: Counter[str] = Counter()  # path_qs -> requests
        self.hosts: list[str] = []
        self.in_flight = 0
        self.sick = False  # its health checks fail
        self.checks: list[str] = []  # the Host of each health check it got
        self.up: Upstream

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            if request.path == "/healthz":  # the health checks' path, apart from traffic
                self.checks.append(request.headers.get("Host", ""))
                return web.Response(status=503 if self.sick else 200, text="checked")
            self.got[request.path_qs] += 1
            self.hosts.append(request.headers.get("Host", ""))
            self.in_flight += 1
            try:
                if self.delay:
                    await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1
            return web.Response(text=self.name)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app

    @property
    def total(self) -> int:
        return sum(self.got.values())

    async def kill(self) -> int:
        """Stop listening and cut every connection, as a crashed process would: how many
        requests it was working on."""
        caught = self.in_flight
        runner = self.up.runner
        assert runner is not None and runner.server is not None
        for site in list(runner.sites):
            server = site._server  # the listening socket: closed, so connections are refused
            assert server is not None
            server.close()
        for handler in list(runner.server.connections):
            handler.force_close()
        return caught


async def start_targets(
    start_upstream: StartUpstream, *names: str, delay: float = 0.0
) -> list[Target]:
    targets = []
    for name in names:
        t = Target(name, delay)
        t.up = await start_upstream(t.app())
        targets.append(t)
    return targets


def upstream(
    targets: list[Target], weights: list[int] | None = None, **more: Any
) -> dict[str, Any]:
    weights = weights or [1] * len(targets)
    return {
        "url": None,  # tests.conftest.config_text gives one
        "targets": [{"url": t.up.url, "weight": w} for t, w in zip(targets, weights, strict=True)],
        **more,
    }


async def fetch(http: aiohttp.ClientSession, proxy: ProxyServer, path: str) -> tuple[int, str]:
    async with http.get(url_of(proxy, path)) as resp:
        return resp.status, await resp.text()


async def connections(http: aiohttp.ClientSession, proxy: ProxyServer) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{proxy.admin_port}/performance/connections") as resp:
        return {u["name"]: u for u in (await resp.json())["upstreams"]}


# --- distribution ----------------------------------------------------------------------


async def test_round_robin_shares_requests_by_weight(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    a, b = await start_targets(start_upstream, "a", "b")
    proxy = await start_proxy(a.up.url, upstream=upstream([a, b], [1, 2]))
    answers = [await fetch(http, proxy, f"/r/{i}") for i in range(30)]
    assert Counter(text for _, text in answers) == {"a": 10, "b": 20}
    assert {status for status, _ in answers} == {200}
    assert (a.total, b.total) == (10, 20)


async def test_consistent_hash_keeps_each_url_on_one_target_and_spreads_urls(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    targets = await start_targets(start_upstream, "a", "b", "c")
    proxy = await start_proxy(
        targets[0].up.url, upstream=upstream(targets, balance="consistent_hash")
    )
    for _ in range(3):
        for i in range(150):
            await fetch(http, proxy, f"/item/{i}")
    for t in targets:  # every URL went to one target only, all three times
        assert set(t.got.values()) == {3}
    seen = [set(t.got) for t in targets]
    assert sum(len(s) for s in seen) == 150
    assert all(25 <= len(s) <= 75 for s in seen), [len(s) for s in seen]


async def test_least_request_sends_fewer_requests_to_a_slow_target(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    (fast,) = await start_targets(start_upstream, "fast", delay=0.005)
    (slow,) = await start_targets(start_upstream, "slow", delay=0.2)
    proxy = await start_proxy(fast.up.url, upstream=upstream([fast, slow], balance="least_request"))

    async def client(n: int) -> None:
        for i in range(15):
            status, _ = await fetch(http, proxy, f"/c{n}/{i}")
            assert status == 200

    await asyncio.gather(*(client(n) for n in range(8)))
    # Round robin would give each 60; the slow one's requests pile up, so it gets few.
    assert fast.total + slow.total == 120
    assert slow.total < 30, (fast.total, slow.total)


# --- a target killed under load --------------------------------------------------------


async def run_load(
    http: aiohttp.ClientSession, proxy: ProxyServer, stop: asyncio.Event, clients: int = 8
) -> list[tuple[float, int, str]]:
    """(time, status, body) of every request of `clients` loops until `stop`."""
    results: list[tuple[float, int, str]] = []

    async def loop(n: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                status, text = await fetch(http, proxy, f"/load/{n}/{i}")
            except aiohttp.ClientError as exc:
                status, text = 0, repr(exc)
            results.append((time.monotonic(), status, text))
            i += 1

    await asyncio.gather(*(loop(n) for n in range(clients)))
    return results


async def kill_under_load(
    names: tuple[str, ...],
    start_upstream: StartUpstream,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    balance: str,
) -> None:
    targets = await start_targets(start_upstream, *names, delay=0.01)
    victim, *others = targets
    proxy = await start_proxy(
        victim.up.url,
        upstream=upstream(
            targets, balance=balance, ejection={"consecutive_failures": 3, "base_time": "30s"}
        ),
    )
    stop = asyncio.Event()
    load = asyncio.create_task(run_load(http, proxy, stop))
    await asyncio.sleep(1.0)
    assert victim.total > 10
    killed_at = time.monotonic()
    in_flight = await victim.kill()
    await asyncio.sleep(1.5)
    stop.set()
    results = await load

    failed = [(status, text) for _, status, text in results if status != 200]
    # At most the requests it was working on fail; idempotent ones are retried elsewhere.
    assert len(failed) <= in_flight, failed
    after = [text for at, status, text in results if at > killed_at + 0.2]
    assert len(after) > 50
    assert set(after) <= {t.name for t in others}  # its share moved to the others
    figures = await connections(http, proxy)
    assert figures["default[0]"]["failures"] >= 3  # attempts failed: retried on the others
    assert figures["default[0]"]["ejected"] is True
    assert figures["default[0]"]["ejections"] == 1
    assert all(figures[f"default[{i}]"]["ejected"] is False for i in range(1, len(names)))


async def test_two_targets_one_killed_under_load_round_robin(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    await kill_under_load(("a", "b"), start_upstream, start_proxy, http, "round_robin")


async def test_three_targets_one_killed_under_load_least_request(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    await kill_under_load(("a", "b", "c"), start_upstream, start_proxy, http, "least_request")


async def test_three_targets_one_killed_under_load_consistent_hash(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    await kill_under_load(("a", "b", "c"), start_upstream, start_proxy, http, "consistent_hash")


async def test_a_target_back_from_ejection_that_fails_again_is_out_at_once_for_longer(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    a, b = await start_targets(start_upstream, "a", "b")
    proxy = await start_proxy(
        a.up.url,
        upstream=upstream(
            [a, b], ejection={"consecutive_failures": 2, "base_time": "1s", "max_time": "10s"}
        ),
    )
    await a.kill()
    answers = [await fetch(http, proxy, f"/p/{i}") for i in range(10)]
    assert {answer for answer in answers} == {(200, "b")}  # retried on b, then a is out
    first = (await connections(http, proxy))["default[0]"]
    assert first["ejected"] and first["ejections"] == 1
    await asyncio.sleep(first["ejected_for"] + 0.05)
    # Back in: its first request fails (retried on b) and takes it out again, for 2 s.
    answers = [await fetch(http, proxy, f"/q/{i}") for i in range(10)]
    assert {answer for answer in answers} == {(200, "b")}
    again = (await connections(http, proxy))["default[0]"]
    assert again["ejections"] == 2 and again["ejected_for"] > 1.5
    assert again["admitted"] == first["admitted"] + 1  # one attempt, not two in a row


async def test_every_target_down_answers_as_one_upstream_down_does(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    a, b = await start_targets(start_upstream, "a", "b")
    proxy = await start_proxy(a.up.url, upstream=upstream([a, b]))
    await a.kill()
    await b.kill()
    for i in range(12):
        async with http.get(url_of(proxy, f"/d/{i}")) as resp:
            assert resp.status == 502
            assert (await resp.json())["error"] == "upstream_unavailable"
    # Both out: more than max_percent, so neither is left out (panic), and both were asked.
    figures = await connections(http, proxy)
    assert figures["default[0]"]["admitted"] > 1 and figures["default[1]"]["admitted"] > 1


# --- what each target is sent ----------------------------------------------------------


async def test_each_target_gets_its_own_host_unless_host_is_set(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    a, b = await start_targets(start_upstream, "a", "b")
    proxy = await start_proxy(a.up.url, upstream=upstream([a, b]))
    for i in range(4):
        await fetch(http, proxy, f"/h/{i}")
    assert set(a.hosts) == {f"127.0.0.1:{a.up.port}"}
    assert set(b.hosts) == {f"127.0.0.1:{b.up.port}"}

    c, d = await start_targets(start_upstream, "c", "d")
    proxy = await start_proxy(c.up.url, upstream=upstream([c, d], host="api.internal"))
    for i in range(4):
        await fetch(http, proxy, f"/h/{i}")
    assert set(c.hosts) == set(d.hosts) == {"api.internal"}


async def test_a_route_balances_its_own_targets(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    main, a, b = await start_targets(start_upstream, "main", "a", "b")
    proxy = await start_proxy(
        main.up.url,
        routes=[
            {
                "name": "api",
                "match": {"prefix": "/api/"},
                "upstream": {"targets": [a.up.url, b.up.url]},
            }
        ],
    )
    answers = [await fetch(http, proxy, f"/api/{i}") for i in range(6)]
    assert Counter(text for _, text in answers) == {"a": 3, "b": 3}
    assert await fetch(http, proxy, "/other") == (200, "main")
    figures = await connections(http, proxy)
    assert {"default", "api[0]", "api[1]"} <= set(figures)


async def test_metrics_and_health_name_each_target_and_the_one_left_out(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    a, b = await start_targets(start_upstream, "a", "b")
    proxy = await start_proxy(
        a.up.url, upstream=upstream([a, b], ejection={"consecutive_failures": 2})
    )
    await a.kill()
    for i in range(6):
        assert await fetch(http, proxy, f"/m/{i}") == (200, "b")
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    async with http.get(f"{admin}/metrics", headers={"Accept-Encoding": "identity"}) as resp:
        lines = (await resp.text()).splitlines()
    assert 'cacheproxy_upstream_ejected{upstream="default[0]"} 1.0' in lines
    assert 'cacheproxy_upstream_ejected{upstream="default[1]"} 0.0' in lines
    assert 'cacheproxy_upstream_ejections_total{upstream="default[0]"} 1.0' in lines
    assert 'cacheproxy_upstream_attempts_total{upstream="default[0]"} 2.0' in lines
    assert 'cacheproxy_upstream_attempts_total{upstream="default[1]"} 6.0' in lines
    async with http.get(f"{admin}/health") as resp:
        health = await resp.json()
    assert health["status"] == "degraded"
    circuits = health["checks"]["circuits"]["upstreams"]
    assert circuits["default[0]"] == {"status": "down", "circuit": "closed", "ejected": True}
    assert circuits["default[1]"] == {"status": "up", "circuit": "closed", "ejected": False}


# --- active health checks --------------------------------------------------------------


async def until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


async def test_health_checks_take_a_failing_target_out_and_bring_it_back(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    a, b = await start_targets(start_upstream, "a", "b")
    settings = {"path": "/healthz", "interval": 1, "timeout": 0.5}
    settings |= {"unhealthy_threshold": 2, "healthy_threshold": 1}
    proxy = await start_proxy(
        a.up.url, upstream=upstream([a, b], host="api.internal", health_check=settings)
    )

    async def state(expected: str) -> bool:
        return bool((await connections(http, proxy))["default[0]"]["health_check"] == expected)

    assert await state("up")  # in from the start, before any check ran
    a.sick = True  # its traffic is answered as ever: only the checks fail
    started = time.monotonic()
    await until(lambda: state("down"))
    assert time.monotonic() - started > 0.8  # two failed checks, about a second apart
    answers = [await fetch(http, proxy, f"/h/{i}") for i in range(6)]
    assert set(answers) == {(200, "b")}
    a.sick = False
    await until(lambda: state("up"))
    answers = [await fetch(http, proxy, f"/h2/{i}") for i in range(6)]
    assert Counter(text for _, text in answers) == {"a": 3, "b": 3}
    elapsed = time.monotonic() - started
    # About one check per target and second (+-15%, the first within the first second).
    for t in (a, b):
        assert set(t.checks) == {"api.internal"}
        assert elapsed / 1.15 - 1 <= len(t.checks) <= elapsed / 0.85 + 1


async def test_without_a_path_the_checks_connect_and_metrics_show_them(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    a, b = await start_targets(start_upstream, "a", "b")
    settings = {"interval": 1, "timeout": 0.5, "unhealthy_threshold": 1}
    proxy = await start_proxy(
        a.up.url,
        upstream=upstream([a, b], health_check=settings, ejection=False),
    )
    await a.kill()  # no request is sent: the checks alone find it

    async def down() -> bool:
        return bool((await connections(http, proxy))["default[0]"]["health_check"] == "down")

    await until(down)
    assert a.checks == [] and a.total == 0  # connected to, never asked
    admin = f"http://127.0.0.1:{proxy.admin_port}"
    async with http.get(f"{admin}/metrics", headers={"Accept-Encoding": "identity"}) as resp:
        lines = (await resp.text()).splitlines()
    assert 'cacheproxy_upstream_health_check_up{upstream="default[0]"} 0.0' in lines
    assert 'cacheproxy_upstream_health_check_up{upstream="default[1]"} 1.0' in lines
    assert set(await asyncio.gather(*(fetch(http, proxy, f"/t/{i}") for i in range(4)))) == {
        (200, "b")
    }


async def test_a_reload_gives_a_route_new_targets_and_keeps_a_group_that_did_not_change(
    start_upstream: StartUpstream, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    main, a, b = await start_targets(start_upstream, "main", "a", "b")
    route = {"name": "api", "match": {"prefix": "/api/"}, "upstream": a.up.url}
    proxy = await start_proxy(main.up.url, routes=[route])
    assert await fetch(http, proxy, "/api/1") == (200, "a")
    kept = proxy.pipeline.routes.default.upstream.group

    both = {**route, "upstream": {"targets": [a.up.url, b.up.url]}}
    new = parse_config(config_text(main.up.url, routes=[both]), env={})
    assert proxy.apply(new)["reloaded"] is True
    answers = [await fetch(http, proxy, f"/api/{i}") for i in range(4)]
    assert Counter(text for _, text in answers) == {"a": 2, "b": 2}
    assert proxy.pipeline.routes.default.upstream.group is kept  # and its balancing state
    figures = await connections(http, proxy)
    assert figures[b.up.url]["admitted"] == 2  # a target named after start-up goes by its URL
