"""The benchmark's upstream: a plain aiohttp web.Application, also the baseline to beat.

`--capacity N` makes it an upstream that thrashes under load: beyond N requests in
flight each one takes delay * (in_flight / N)**2, so piling on more requests makes every
one slower and the whole slower too (as a service short of threads, memory or locks
does). With a delay, GET /__bench/stats reports what it saw: requests, distinct paths,
peak and mean in flight (at arrivals), mean service time; POST /__bench/reset starts afresh.
POST /__bench/fail makes it respond 503 to everything from then on (an outage); paths under
/__fail/ always respond 503 and /__hang/ responds after 30 s (one endpoint broken, the rest fine).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web


class Seen:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.in_flight = 0
        self.requests = 0
        self.peak = 0
        self.in_flight_sum = 0
        self.service_sum = 0.0
        self.paths: set[str] = set()  # distinct targets: was each key fetched once?

    def report(self) -> dict[str, float]:
        n = max(1, self.requests)
        return {
            "requests": self.requests,
            "peak_in_flight": self.peak,
            "mean_in_flight": self.in_flight_sum / n,
            "mean_service_ms": self.service_sum / n * 1e3,
            "distinct_paths": len(self.paths),
        }


def build(size: int, delay: float, max_age: int, capacity: int = 0) -> web.Application:
    body = (b'{"data":"' + b"x" * max(0, size - 11) + b'"}')[:size]
    headers = {"Cache-Control": f"public, max-age={max_age}"} if max_age else {}
    seen = Seen()
    outage = False

    async def handler(request: web.Request) -> web.Response:
        if outage or request.path.startswith("/__fail/"):
            return web.Response(status=503, text="down")
        if request.path.startswith("/__hang/"):
            await asyncio.sleep(30)
        if delay:
            seen.in_flight += 1
            seen.requests += 1
            seen.paths.add(request.path_qs)
            seen.peak = max(seen.peak, seen.in_flight)
            seen.in_flight_sum += seen.in_flight
            started = time.perf_counter()
            try:
                overload = seen.in_flight / capacity if capacity else 1.0
                await asyncio.sleep(delay * max(1.0, overload) ** 2)
            finally:
                seen.in_flight -= 1
                seen.service_sum += time.perf_counter() - started
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(seen.report())

    async def reset(_: web.Request) -> web.Response:
        seen.reset()
        return web.Response(status=204)

    async def fail(_: web.Request) -> web.Response:
        nonlocal outage
        outage = True
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/__bench/stats", stats)
    app.router.add_post("/__bench/reset", reset)
    app.router.add_post("/__bench/fail", fail)
    app.router.add_get("/{tail:.*}", handler)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--max-age", type=int, default=0)
    parser.add_argument("--capacity", type=int, default=0, help="requests it serves at full speed")
    args = parser.parse_args()
    try:  # the same event loop as the proxy gets, so the comparison is like for like
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(
        build(args.size, args.delay, args.max_age, args.capacity),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )
