"""What metrics and the access log add to one memory hit, in microseconds of CPU.

    python -m bench.observe_cost [--hits 200000]

Calls `Observer.observe` (what the proxy port calls once a hit is sent) on a real aiohttp
request and response, in this process, with the clock that counts CPU only, so other
load on a shared machine disturbs it little. Prints: metrics alone; metrics plus the
access log's share on the event loop; and the access log's share in its writer thread
(formatting a line), which the process pays too.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from collections.abc import Callable

import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy.config.loader import parse_config
from proxy.config.logs import LogSettings
from proxy.observe.metrics import ROUTE, Meters
from proxy.observe.observer import Observer
from proxy.pipeline.routes import RouteTable
from proxy.respond.prepared import PreparedResponse
from proxy.server.app import route_facts


def _cpu_us(call: Callable[..., object], n: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(n):
            call()
        best = min(best, time.process_time() - started)
    return best / n * 1e6


async def main(hits: int) -> None:
    config = parse_config(
        yaml.safe_dump(
            {
                "upstream": {"url": "http://127.0.0.1:9"},
                "cache": {"ttl": 60},
                "routes": [{"name": f"r{i}", "match": {"prefix": f"/r{i}/"}} for i in range(8)],
            }
        ),
        env={},
    )
    routes = RouteTable(config)
    request = make_mocked_request("GET", "/r3/quote/AAPL?fields=price")
    response = web.Response(body=b"x" * 1024, headers={"X-Cache": "HIT", "Age": "3"})
    clock = time.perf_counter

    def hit(observer: Observer) -> None:
        # All a hit pays: the listener's clock read, the pipeline naming the route, and
        # the listener's call once the response is sent.
        started = clock()
        request[ROUTE] = "r3"
        observer.observe(request, response, clock() - started)

    n = hits // 5
    costs = {}
    for name, settings in (
        ("metrics", LogSettings(access=False)),
        ("metrics + access log (loop side)", LogSettings(format="json")),
    ):
        facts = route_facts(routes)
        observer = Observer(
            Meters(facts.meters),
            settings,
            facts.trusted_proxies,
            PreparedResponse,
            stream=io.BytesIO(),
        )
        if observer.access is not None:
            observer.access._max_pending = hits * 10  # measure appending, not dropping
        costs[name] = _cpu_us(lambda o=observer: hit(o), n)
        if observer.access is not None:
            records = observer.access._pending[:20_000]
            lines = iter(records * 10)
            costs["access log (writer thread, per line)"] = _cpu_us(
                lambda line=observer.access.line, it=lines: line(next(it)), 20_000
            )
    for name, us in costs.items():
        print(f"{name:<40} {us:6.2f} us per hit")
    total = (
        costs["metrics + access log (loop side)"] + costs["access log (writer thread, per line)"]
    )
    print(f"{'all together (goal <= 4 us)':<40} {total:6.2f} us per hit")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().hits))
