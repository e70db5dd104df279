"""A small, deliberately slow "market data" API to put the proxy in front of.

Cold requests take about two seconds, like the analytics backends this proxy is for.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time

import orjson
from aiohttp import web

SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "TSLA")


def build_demo_app(delay: float = 2.0) -> web.Application:
    started = time.time()

    def payload(request: web.Request, body: dict[str, object], max_age: int) -> web.Response:
        raw = orjson.dumps(body)
        etag = '"' + hashlib.sha256(raw).hexdigest()[:16] + '"'
        return web.Response(
            body=raw,
            content_type="application/json",
            headers={"Cache-Control": f"public, max-age={max_age}", "ETag": etag},
        )

    async def quote(request: web.Request) -> web.Response:
        symbol = request.match_info["symbol"].upper()
        await asyncio.sleep(delay)  # the expensive query this proxy exists to avoid repeating
        rng = random.Random(f"{symbol}:{int(time.time() // 60)}")
        return payload(
            request,
            {
                "symbol": symbol,
                "price": round(rng.uniform(50, 900), 2),
                "volume": rng.randint(10_000, 5_000_000),
                "computed_at": time.time(),
            },
            max_age=30,
        )

    async def signals(request: web.Request) -> web.Response:
        symbol = request.match_info["symbol"].upper()
        await asyncio.sleep(delay)
        rng = random.Random(f"signals:{symbol}:{request.query_string}")
        series = [round(rng.gauss(0, 1), 4) for _ in range(200)]
        return payload(
            request,
            {"symbol": symbol, "window": request.query.get("window", "1d"), "series": series},
            max_age=60,
        )

    async def symbols(_: web.Request) -> web.Response:
        return web.json_response({"symbols": SYMBOLS, "uptime": time.time() - started})

    app = web.Application()
    app.router.add_get("/api/symbols", symbols)
    app.router.add_get("/api/quotes/{symbol}", quote)
    app.router.add_get("/api/signals/{symbol}", signals)
    return app
