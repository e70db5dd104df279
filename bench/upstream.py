"""The benchmark's upstream: a plain aiohttp web.Application, also the baseline to beat."""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


def build(size: int, delay: float, max_age: int) -> web.Application:
    body = (b'{"data":"' + b"x" * max(0, size - 11) + b'"}')[:size]
    headers = {"Cache-Control": f"public, max-age={max_age}"} if max_age else {}

    async def handler(_: web.Request) -> web.Response:
        if delay:
            await asyncio.sleep(delay)
        return web.Response(body=body, content_type="application/json", headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--max-age", type=int, default=0)
    args = parser.parse_args()
    try:  # the same event loop as the proxy gets, so the comparison is like for like
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(
        build(args.size, args.delay, args.max_age),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )
