"""How many hot hits the fast path answers: bench.callgrind's `hit` load, then the admin
port's `/listener/stats` `fast_path` over the requests sent.

    python -m bench.fast_share 2200            # natively
    python -m bench.fast_share 2200 valgrind   # under callgrind, as bench.callgrind runs it

Under valgrind the proxy is ~50x slower, so the load keeps every connection's next request
waiting while the previous response is still being finished: the case where a fast path that
only answers on a parked connection declines most requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import yaml

from bench import servers, suite
from bench.loadgen import run_load


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2200
    under_valgrind = len(sys.argv) > 2 and sys.argv[2] == "valgrind"
    work = Path(tempfile.mkdtemp(prefix="fast-share-"))
    with contextlib.ExitStack() as stack:
        up = stack.enter_context(servers.upstream(["--size", "1024", "--max-age", "3600"]))
        config = servers.proxy_config(up.port, suite.full_pipeline(True))
        port, admin = config["listen"]["port"], config["admin"]["port"]
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        argv = [sys.executable, "-m", "proxy", "run", "--config", str(work / "config.yaml")]
        argv += ["--log-level", "WARNING"]
        if under_valgrind:
            argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/out.%p", *argv]
        proc = subprocess.Popen(
            argv,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            servers.wait_listening(port, proc, timeout=300)
            headers = f"Origin: {suite.ORIGIN}\r\nAccept-Encoding: br\r\n"

            def load(count: int) -> None:
                asyncio.run(
                    run_load(
                        "hit",
                        port,
                        lambda i: "/api/item/1?x=1",
                        concurrency=16,
                        duration=3600,
                        max_requests=count,
                        headers=headers,
                    )
                )

            def fast_path() -> tuple[int, int]:
                url = f"http://127.0.0.1:{admin}/listener/stats"
                with urllib.request.urlopen(url, timeout=60) as resp:
                    stats = json.loads(resp.read())
                return int(stats["fast_path"]), int(stats.get("fast_path_heads", 0))

            load(500)
            before, heads_before = fast_path()
            load(n)
            after, heads_after = fast_path()
            taken, heads = after - before, heads_after - heads_before
        finally:
            proc.terminate()
            proc.wait()
            shutil.rmtree(work, ignore_errors=True)
    where = "under valgrind" if under_valgrind else "natively"
    print(
        f"fast path {where}: {taken} of {n} hits ({100 * taken / n:.1f}%), "
        f"{heads} of them read by the listener (fast_path_heads)"
    )


if __name__ == "__main__":
    main()
