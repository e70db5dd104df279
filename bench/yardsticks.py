"""What the proxy is measured against: the simplest aiohttp programs doing the same job.

    python -m bench.yardsticks app --port N --body-file F --headers-file H
    python -m bench.yardsticks server --port N --body-file F --headers-file H
    python -m bench.yardsticks forward --port N --upstream http://127.0.0.1:M
    python -m bench.yardsticks dictcache --port N --upstream http://127.0.0.1:M

`app` and `server` respond to every GET with the given bytes (a plain `web.Application`, and
aiohttp's low-level `web.Server` without a router; `app --processes N`: N processes
sharing the port with SO_REUSEPORT, as the proxy's workers do); `forward` is a naive
forwarding proxy (one ClientSession, bodies read whole); `dictcache` a minimal caching
proxy: a dict with expiry times and one upstream fetch per cold key. Deliberately naive:
no header hygiene beyond hop-by-hop headers, no limits, no RFC 9111.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}


def _clean(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP}


def fixed_bytes(body: bytes, headers: list[tuple[str, str]]) -> web.Application:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=body, headers=headers)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app


def fixed_bytes_low_level(body: bytes, headers: list[tuple[str, str]]) -> web.Server:
    async def handler(_: web.BaseRequest) -> web.Response:
        return web.Response(body=body, headers=headers)

    return web.Server(handler)


def forward(upstream: str) -> web.Application:
    """A naive forwarding proxy: what "just use aiohttp" gives."""

    async def handler(request: web.Request) -> web.Response:
        session: aiohttp.ClientSession = request.app["session"]
        async with session.request(
            request.method,
            upstream + request.path_qs,
            headers=_clean(request.headers),
            data=await request.read() if request.body_exists else None,
            allow_redirects=False,
        ) as up:
            body = await up.read()
            return web.Response(status=up.status, body=body, headers=_clean(up.headers))

    return _with_session(handler)


class DictCache:
    """key -> (expiry, status, headers, body), with one upstream fetch per cold key."""

    def __init__(self, upstream: str, default_ttl: float = 60.0) -> None:
        self.upstream = upstream
        self.default_ttl = default_ttl
        self.entries: dict[str, tuple[float, int, dict[str, str], bytes]] = {}
        self.fetching: dict[str, asyncio.Future[tuple[float, int, dict[str, str], bytes]]] = {}

    async def handler(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET"])
        key = request.path_qs
        entry = self.entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            waiting = self.fetching.get(key)
            if waiting is not None:
                entry = await asyncio.shield(waiting)
            else:
                future = self.fetching[key] = asyncio.get_running_loop().create_future()
                try:
                    entry = await self.fetch(request.app["session"], key)
                    future.set_result(entry)
                except Exception as exc:
                    future.set_exception(exc)
                    future.exception()  # nobody else may be waiting: not "never retrieved"
                    raise
                finally:
                    del self.fetching[key]
        _, status, headers, body = entry
        return web.Response(status=status, body=body, headers=headers)

    async def fetch(
        self, session: aiohttp.ClientSession, key: str
    ) -> tuple[float, int, dict[str, str], bytes]:
        async with session.get(self.upstream + key, allow_redirects=False) as up:
            body = await up.read()
            headers = _clean(up.headers)
        match = re.search(r"max-age=(\d+)", headers.get("Cache-Control", ""))
        ttl = float(match.group(1)) if match else self.default_ttl
        entry = (time.monotonic() + ttl, up.status, headers, body)
        if up.status == 200:
            self.entries[key] = entry
        return entry


def dict_cache(upstream: str) -> web.Application:
    return _with_session(DictCache(upstream).handler)


def _with_session(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.Application:
    async def session(app: web.Application) -> AsyncIterator[None]:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), auto_decompress=False
        )
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["app", "server", "forward", "dictcache"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", help="forward, dictcache: the origin's URL")
    parser.add_argument("--body-file", type=Path, help="app, server: the bytes to respond with")
    parser.add_argument("--headers-file", type=Path, help="app, server: JSON [[name, value]]")
    parser.add_argument("--processes", type=int, default=1, help="app: N, with SO_REUSEPORT")
    args = parser.parse_args()
    if args.processes > 1:  # the others are this command again, sharing the port
        argv = [sys.executable, "-m", "bench.yardsticks", *sys.argv[1:], "--processes", "0"]
        others = [subprocess.Popen(argv) for _ in range(args.processes - 1)]
        try:
            serve(args)
        finally:
            for other in others:
                other.terminate()
                other.wait()
    else:
        serve(args)


def serve(args: argparse.Namespace) -> None:
    try:  # the same event loop as the proxy gets, so the comparison is like for like
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.kind in ("app", "server"):
        body = args.body_file.read_bytes()
        headers = [(k, v) for k, v in json.loads(args.headers_file.read_text())]
        if args.kind == "server":
            asyncio.run(serve_low_level(body, headers, args.port))
            return
        app = fixed_bytes(body, headers)
    else:
        app = (forward if args.kind == "forward" else dict_cache)(args.upstream)
    reuse = args.processes != 1
    web.run_app(
        app, host="127.0.0.1", port=args.port, access_log=None, print=None, reuse_port=reuse
    )


async def serve_low_level(body: bytes, headers: list[tuple[str, str]], port: int) -> None:
    runner = web.ServerRunner(fixed_bytes_low_level(body, headers))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()  # until SIGTERM ends the process


if __name__ == "__main__":
    main()
