"""Instructions per request under callgrind: steady where req/s on a shared machine is not.

    python -m bench.callgrind miss 2000        # a miss, cache off, full pipeline
    DROP=cors python -m bench.callgrind miss 2000   # ... without CORS (or limit, log, request_id)
    TARGETS=least_request python -m bench.callgrind miss 2000  # ... over two upstream targets
    TRACING=0 python -m bench.callgrind hit 2000    # ... with `tracing:`, this sample_ratio
    VHOSTS=1 python -m bench.callgrind hit 2000     # ... its route on the Host the load sends
    python -m bench.callgrind cold 2000        # every request a new key, stored
    python -m bench.callgrind hit 3000         # the full-pipeline hot hit
    python -m bench.callgrind forward 2000     # the naive aiohttp forwarding proxy
    python -m bench.callgrind relay 2000       # the floor: uvloop + httptools, no tasks
    python -m bench.callgrind dictcache 2000   # the dict-cache yardstick
    python -m bench.callgrind l2 2000          # bench.run l2-hits' L2 hit: Redis, not memory
    python -m bench.callgrind l1 2000          # ... and its L1 hit, same config with room
    KEEP=1 python -m bench.callgrind hit 2000  # ... keeping callgrind's output (its folder printed)

The bench upstream (1 KB bodies) runs normally; the measured server runs under valgrind's
callgrind with PYTHONHASHSEED=0. It is warmed with 500 requests, its counters are zeroed,
then N requests go over 16 keep-alive connections (bench/loadgen.py) and it dumps. User-space
instructions only: the kernel's share of each request (the socket calls) is not counted.
Runs of one tree differ by up to about 1%; compare trees by alternating them.
`l2` and `l1` start a redis-server of their own and send one request at a time, as the
l2-hits scenario does; the Redis server's work is not counted, only the proxy's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench import run, servers, suite
from bench.loadgen import run_load

KINDS = ("miss", "cold", "hit", "forward", "relay", "dictcache", "l2", "l1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("requests", type=int, nargs="?", default=2000)
    args = parser.parse_args()
    kind, n = args.kind, args.requests
    stored = kind in ("cold", "dictcache", "hit", "l2", "l1")
    work = Path(tempfile.mkdtemp(prefix="callgrind-"))
    with contextlib.ExitStack() as stack:
        upstream_args = ["--size", "1024", *(["--max-age", "3600"] if stored else [])]
        up = stack.enter_context(servers.upstream(upstream_args))
        port = servers.free_port()
        if kind in ("l2", "l1"):
            redis = stack.enter_context(run.RedisProcess())
            config = servers.proxy_config(up.port, run.l2_config(redis.url, kind == "l1"))
            config["listen"]["port"] = port
            (work / "config.yaml").write_text(yaml.safe_dump(config))
            argv = ["-m", "proxy", "run", "--config", str(work / "config.yaml")]
            argv += ["--log-level", "WARNING"]
        elif kind in ("miss", "cold", "hit"):
            config = servers.proxy_config(up.port, suite.full_pipeline(kind != "miss"))
            config["listen"]["port"] = port
            for drop in filter(None, os.environ.get("DROP", "").split(",")):
                if drop == "log":
                    config["log"] = {"access": False}
                elif drop == "request_id":
                    config["request_id"] = False
                else:
                    config.pop({"cors": "cors", "limit": "rate_limit"}[drop])
            if os.environ.get("VHOSTS"):  # virtual hosts: the Host is read and looked up
                route = config["routes"][0]
                route["match"]["hosts"] = ["127.0.0.1", "api.example.com"]
                other = {"name": "other", "match": {"prefix": "/", "hosts": ["*.example.com"]}}
                config["routes"] += [other, {"name": "rest", "match": {"prefix": "/"}}]
            balance = os.environ.get("TARGETS")
            if balance is not None:  # the upstream as two targets (two names, one server)
                origins = [f"http://{host}:{up.port}" for host in ("127.0.0.1", "localhost")]
                config["upstream"].pop("url")
                config["upstream"].update(targets=origins, balance=balance)
            ratio = os.environ.get("TRACING")
            if ratio is not None:  # spans go to a closed port: their export fails, costs stay
                endpoint = f"http://127.0.0.1:{servers.free_port()}/v1/traces"
                config["tracing"] = {"sample_ratio": float(ratio), "endpoint": endpoint}
            (work / "config.yaml").write_text(yaml.safe_dump(config))
            argv = ["-m", "proxy", "run", "--config", str(work / "config.yaml")]
            argv += ["--log-level", "WARNING"]
        else:
            upstream = f"http://127.0.0.1:{up.port}"
            argv = ["-m", "bench.yardsticks", kind, "--port", str(port), "--upstream", upstream]
        out = work / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"]
        proc = subprocess.Popen(
            [*valgrind, sys.executable, *argv],
            env={**os.environ, "PYTHONHASHSEED": "0"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            servers.wait_listening(port, proc, timeout=300)
            total = _measure(proc.pid, port, kind, n, Path(f"{out}.{proc.pid}.1"))
        finally:
            proc.terminate()
            proc.wait()
            if os.environ.get("KEEP"):
                print(work)
            else:
                shutil.rmtree(work, ignore_errors=True)
    print(f"{kind}: {total / n / 1000:.1f}k instructions per request ({n} requests)")


def _measure(pid: int, port: int, kind: str, n: int, dump: Path) -> int:
    headers = f"Origin: {suite.ORIGIN}\r\n"
    concurrency = 16
    if kind in ("l2", "l1"):  # as in the scenario: its keys, one request at a time
        paths = [run.l2_path(i) for i in range(run.L2_KEYS)]
        headers, concurrency = "", 1
    elif kind == "hit":
        paths = ["/api/item/1?x=1"]
        headers += "Accept-Encoding: br\r\n"
    elif kind in ("cold", "dictcache"):
        paths = [f"/api/cold/{i}" for i in range(n + 500)]  # every one new
    else:
        paths = [f"/api/item/{i}?x=1" for i in range(100)]
    sent = 0

    def load(count: int) -> None:
        nonlocal sent
        first = sent
        sent += count
        asyncio.run(
            run_load(
                kind,
                port,
                lambda i: paths[(first + i) % len(paths)],
                concurrency=concurrency,
                duration=3600,
                max_requests=count,
                headers=headers,
            )
        )

    load(500)
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    load(n)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    time.sleep(1)
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {dump}")


if __name__ == "__main__":
    main()
