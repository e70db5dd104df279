"""Rate-limit checks per second, in process: the memory backend and a real Redis.

Starts its own `redis-server` on a free loopback port and stops it by its PID. The memory
figure is the whole synchronous check of one client among 10,000; the Redis one is
EVALSHA round trips with 32 checks in flight, as concurrent requests would make them.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time

from proxy.config.redis import RedisSettings
from proxy.edge.ratelimit.memory import MemoryWindows
from proxy.edge.ratelimit.redis_backend import RedisWindows
from proxy.shared.redis import SharedRedis

WINDOWS, LIMITS = (60, 3600), (1_000_000, 10_000_000)
CLIENTS = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(10_000)]


def memory_checks(duration: float) -> float:
    memory = MemoryWindows(WINDOWS[:1], LIMITS[:1], max_clients=100_000)
    done = 0
    deadline = time.perf_counter() + duration
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for client in CLIENTS[:1000]:
            memory.hit(client)
        done += 1000
    return done / (time.perf_counter() - started)


async def redis_checks(url: str, duration: float, concurrency: int = 32) -> float:
    redis = SharedRedis(RedisSettings(url=url, timeout=2))
    backend = RedisWindows(redis, "bench", WINDOWS, LIMITS)
    done = 0
    deadline = time.perf_counter() + duration

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            await backend.hit(CLIENTS[i % len(CLIENTS)])
            done += 1
            i += concurrency

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        await redis.close()
    return done / (time.perf_counter() - started)


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is needed: apt-get install redis-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([binary, *args, "--dir", tempfile.mkdtemp()], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


async def run(duration: float) -> None:
    print(f"   memory backend, 1 limit:               {memory_checks(duration):>8.0f} checks/s")
    proc, port = start_redis()
    try:
        rate = await redis_checks(f"redis://127.0.0.1:{port}/0", duration)
        print(f"   Redis backend, 2 limits, 32 in flight: {rate:>8.0f} checks/s")
    finally:
        stop(proc)
