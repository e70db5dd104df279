"""How fast the upstream circuit opens in a full outage, at a steady 100 requests a second.

    python -m bench.run breaker

A bench upstream answers everything, until POST /__bench/fail makes it answer 503 to
every request (bench/upstream.py). Clients send `rate` requests a second, each to a path of
its own, through the proxy with its default breaker (and once more with retries off).
After `warm` seconds of healthy traffic (a full window of successes) the upstream fails;
what is measured is the time from then to the first request the proxy refuses itself
(503 upstream_unavailable, "paused"), and the failed attempts the upstream got meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

from bench import servers

REFUSED = b'"error":"upstream_unavailable"'


async def _exchange(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        async with asyncio.timeout(30):
            return await reader.read()
    finally:
        writer.close()


def _admin(port: int, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=5) as resp:
        body = resp.read()
    return json.loads(body) if body else None


async def time_to_open(upstream: dict[str, Any], rate: float, warm: float) -> tuple[float, int]:
    """(seconds from the outage to the first refusal, failed attempts upstream meanwhile)."""
    with servers.upstream([]) as up:
        config = servers.proxy_config(up.port, {"upstream": upstream, "log": {"access": False}})
        with servers.proxy(config):
            port, admin = config["listen"]["port"], config["admin"]["port"]
            outage_at: float | None = None
            refused_at: float | None = None
            pending: set[asyncio.Task[None]] = set()

            async def one(i: int) -> None:
                nonlocal refused_at
                sent = time.perf_counter()
                answer = await _exchange(port, f"/api/item/{i}")
                if REFUSED in answer and b"paused" in answer and refused_at is None:
                    refused_at = sent

            started = time.perf_counter()
            i = 0
            while refused_at is None and i < rate * (warm + 30):
                at = started + i / rate
                if outage_at is None and at - started >= warm:
                    await asyncio.to_thread(_admin, up.port, "/__bench/fail", "POST")
                    outage_at = time.perf_counter()
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                task = asyncio.create_task(one(i))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
            await asyncio.gather(*pending)
            (figures,) = (await asyncio.to_thread(_admin, admin, "/performance/connections"))[
                "upstreams"
            ]
    assert outage_at is not None and refused_at is not None, "the circuit never opened"
    return refused_at - outage_at, int(figures["failures"])


async def run(rate: float = 100.0, warm: float = 12.0) -> None:
    for name, upstream in (("defaults", {}), ("retries: 0", {"retries": 0})):
        seconds, failures = await time_to_open(upstream, rate, warm)
        print(
            f"   {name}: at {rate:.0f} req/s after {warm:.0f} s of healthy traffic, the circuit "
            f"opened {seconds:.2f} s into a full outage ({failures} failed attempts upstream)"
        )
