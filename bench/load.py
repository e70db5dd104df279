"""One round of keep-alive load against a server, with wrk when installed, else
bench/loadgen.py; the server's CPU time is read before and after.

wrk runs one thread (the other core is the server's) and a Lua script: it walks a file
of paths when there are several, and prints its figures as one JSON line at the end.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import run_load
from bench.report import Run
from bench.servers import Server

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d,"non2xx":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""
_PATHS = """
local paths, n, i = {}, 0, 0
init = function(args)
  for line in io.lines(args[1]) do n = n + 1; paths[n] = line end
end
request = function()
  i = i + 1
  return wrk.format(nil, paths[(i - 1) % n + 1])
end
"""


@dataclass(frozen=True)
class Load:
    """What the clients send: paths in turn (cycling), with these headers."""

    paths: tuple[str, ...]
    headers: tuple[tuple[str, str], ...] = ()
    concurrency: int = 64
    duration: float = 3.0  # seconds; wrk rounds to whole seconds
    max_requests: int = 10_000_000  # the bundled client only


use_wrk = shutil.which("wrk") is not None  # the suite's --loadgen turns it off


def loader_name() -> str:
    return "wrk, 1 thread" if use_wrk else "bench/loadgen.py"


def measure(server: Server, load: Load, port: int | None = None) -> Run:
    """One round against `server` (on `port` if given, else its own)."""
    before = server.cpu_seconds()
    run = (_wrk if use_wrk else _loadgen)(load, port or server.port)
    run.cpu = server.cpu_seconds() - before
    return run


def _wrk(load: Load, port: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as d:
        script = Path(d) / "load.lua"
        script.write_text((_PATHS if len(load.paths) > 1 else "") + _DONE)
        paths_file = Path(d) / "paths"
        paths_file.write_text("\n".join(load.paths) + "\n")
        argv = ["wrk", "-t1", f"-c{load.concurrency}", f"-d{max(1, round(load.duration))}s"]
        argv += ["--timeout", "10s", "-s", str(script)]
        for name, value in load.headers:
            argv += ["-H", f"{name}: {value}"]
        argv += [f"http://127.0.0.1:{port}{load.paths[0]}", "--", str(paths_file)]
        before = _children_cpu()
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        loader_cpu = _children_cpu() - before
    figures = json.loads(out.strip().splitlines()[-1])
    return Run(
        requests=figures["requests"],
        elapsed=figures["duration_us"] / 1e6,
        p50=figures["p50_us"] / 1e6,
        p99=figures["p99_us"] / 1e6,
        errors=figures["errors"] + figures["non2xx"],
        loader_cpu=loader_cpu,
    )


def _children_cpu() -> float:
    """CPU seconds of this process's waited-for children (wrk runs are such children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own_cpu() -> float:
    """CPU seconds of this process: the bundled load generator runs in it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _loadgen(load: Load, port: int) -> Run:
    paths = load.paths
    headers = "".join(f"{k}: {v}\r\n" for k, v in load.headers)
    before = _own_cpu()
    result = asyncio.run(
        run_load(
            "",
            port,
            lambda i: paths[i % len(paths)],
            concurrency=load.concurrency,
            duration=load.duration,
            max_requests=load.max_requests,
            headers=headers,
        )
    )
    loader_cpu = _own_cpu() - before
    bad = sum(n for status, n in result.statuses.items() if status >= 400)
    return Run(
        requests=len(result.latencies),
        elapsed=result.elapsed,
        p50=result.percentile(50),
        p99=result.percentile(99),
        errors=result.errors + bad,
        loader_cpu=loader_cpu,
    )
