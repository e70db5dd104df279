"""The upstream circuit breaker under load: what it refuses that it should not, and how fast
it opens when it should.

    python -m bench.run breaker

Three runs, each through a proxy with its default breaker in front of the bench upstream
(bench/upstream.py), clients sending paced requests, each to a path of its own:

- steady: 200 req/s for 20 s, every 50th request (2%) to an endpoint that responds 503;
- one client: 100 req/s of healthy traffic for 15 s, while one client sends 10 requests to
  an endpoint that responds 503, then 10 at once to one that never responds in time;
- outage: 100 req/s; after `warm` seconds of healthy traffic (a full window of successes)
  POST /__bench/fail makes the upstream respond 503 to everything (once more with retries
  off). Measured: the time from then to the first request the proxy refuses itself.

A refusal is the proxy's own 503 upstream_unavailable ("paused"): the circuit was open.
The first two count refusals of requests whose upstream response would have been a 200.
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
                response = await _exchange(port, f"/api/item/{i}")
                if REFUSED in response and b"paused" in response and refused_at is None:
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


async def _paced(port: int, rate: float, seconds: float, path: Any) -> list[bool]:
    """Send `rate` requests a second for `seconds`; for each, whether the proxy refused it."""
    tasks: list[asyncio.Task[bytes]] = []
    started = time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(_exchange(port, path(i))))
    return [REFUSED in reply and b"paused" in reply for reply in await asyncio.gather(*tasks)]


async def refusals(scenario: str) -> tuple[int, int]:
    """(healthy requests the proxy refused, healthy requests) in the `scenario` run."""
    with servers.upstream([]) as up:
        config = servers.proxy_config(
            up.port, {"upstream": {"timeouts": {"read": 1}}, "log": {"access": False}}
        )
        with servers.proxy(config):
            port = config["listen"]["port"]
            if scenario == "steady":
                refused = await _paced(
                    port, 200, 20, lambda i: f"/__fail/{i}" if i % 50 == 0 else f"/api/{i}"
                )
                healthy = [r for i, r in enumerate(refused) if i % 50]
            else:

                async def one_client() -> None:
                    for _ in range(10):
                        await _exchange(port, "/__fail/broken")
                    await asyncio.sleep(5)
                    await asyncio.gather(*(_exchange(port, "/__hang/x") for _ in range(10)))

                healthy, _ = await asyncio.gather(
                    _paced(port, 100, 15, lambda i: f"/api/{i}"), one_client()
                )
    return sum(healthy), len(healthy)


async def run(rate: float = 100.0, warm: float = 12.0) -> None:
    refused, healthy = await refusals("steady")
    print(f"   steady, 2% failing, 200 req/s for 20 s: {refused} of {healthy} healthy refused")
    refused, healthy = await refusals("one client")
    print(
        f"   one client, 10 requests to a 503 endpoint then 10 to a hanging one, among"
        f" 100 req/s for 15 s: {refused} of {healthy} healthy refused"
    )
    for name, upstream in (("defaults", {}), ("retries: 0", {"retries": 0})):
        seconds, failures = await time_to_open(upstream, rate, warm)
        print(
            f"   {name}: at {rate:.0f} req/s after {warm:.0f} s of healthy traffic, the circuit "
            f"opened {seconds:.2f} s into a full outage ({failures} failed attempts upstream)"
        )
