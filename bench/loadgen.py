"""A small keep-alive HTTP/1.1 load generator: cheap enough that the server is the bottleneck.

aiohttp's client spends more CPU per request than the proxy does, so with two cores it
would measure itself. This one writes prepared request bytes and parses only the status
line and Content-Length of each response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.servers import cpu_seconds


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    server_cpu: float | None = None  # CPU seconds the measured server process spent

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.server_cpu is None or not self.latencies:
            return None
        return self.server_cpu / len(self.latencies) * 1e6

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def row(self) -> str:
        return (
            f"{self.name:<28} {self.rps:>9.0f} req/s   p50 {self.percentile(50) * 1e3:7.2f} ms"
            f"   p99 {self.percentile(99) * 1e3:7.2f} ms   n={len(self.latencies)}"
            f" errors={self.errors} statuses={dict(sorted(self.statuses.items()))}"
            + (
                f"\n{'':<28} server CPU {self.cpu_us_per_request:.0f} us/request"
                if self.cpu_us_per_request is not None
                else ""
            )
        )


async def _read_response(reader: asyncio.StreamReader, head_only: bool) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if head_only or status in (204, 304):
        return status
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return status
    await reader.readexactly(length)
    return status


async def run_load(
    name: str,
    port: int,
    paths: Callable[[int], str],
    *,
    concurrency: int,
    duration: float,
    max_requests: int,
    headers: str = "",
    server_pid: int | None = None,
) -> Result:
    """`concurrency` keep-alive connections, each sending requests back to back."""
    result = Result(name)
    deadline = time.perf_counter() + duration
    counter = 0

    async def worker() -> None:
        nonlocal counter
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline and counter < max_requests:
                i = counter
                counter += 1
                request = f"GET {paths(i)} HTTP/1.1\r\nHost: bench\r\n{headers}\r\n".encode()
                start = time.perf_counter()
                writer.write(request)
                try:
                    status = await asyncio.wait_for(_read_response(reader, False), 30)
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                result.latencies.append(time.perf_counter() - start)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    cpu_before = cpu_seconds(server_pid) if server_pid else None
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - started
    if server_pid and cpu_before is not None:
        result.server_cpu = cpu_seconds(server_pid) - cpu_before
    return result
