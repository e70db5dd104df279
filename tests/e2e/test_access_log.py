"""The access log: one line per response, written off the event loop, never a secret."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from collections.abc import Callable

import aiohttp
import orjson
from hypothesis import given
from hypothesis import strategies as st

from proxy.config.logs import LogSettings
from proxy.http.clientaddr import TrustedProxies
from proxy.observe.logs import AccessLog, Record, iso_time, loggable_path, ms_text
from tests.conftest import Origin, ProxyProcess

SECRETS = ("TOPSECRET", "COOKIESECRET", "QUERYSECRET", "ADMINSECRET")


def test_only_listed_query_parameters_are_logged() -> None:
    keep = frozenset({"page", "q"})
    assert loggable_path("/a?api_key=s&page=2&q=x", keep) == "/a?page=2&q=x"
    assert loggable_path("/a?api_key=s", keep) == "/a"
    assert loggable_path("/a?page=2", frozenset()) == "/a"  # none listed: no query at all
    assert loggable_path("/a", keep) == "/a"


def test_hits_are_sampled_evenly() -> None:
    log = AccessLog(LogSettings(sample_hits=0.25), io.BytesIO(), TrustedProxies())
    decisions = [log.hit_sampled() for _ in range(100)]
    assert sum(decisions) == 25
    assert decisions[:8] == [False, False, False, True] * 2
    never = AccessLog(LogSettings(sample_hits=0), io.BytesIO(), TrustedProxies())
    assert not any(never.hit_sampled() for _ in range(1000))


def _record(
    path: str = "/a?page=1&token=QUERYSECRET", ids: tuple[str | None, str | None] = (None, None)
) -> Record:
    return (
        1_700_000_000.25,
        "GET",
        path,
        "api",
        200,
        "hit",
        None,
        0.000412,
        1,
        "10.1.2.3",
        (),
        (),
        *ids,
    )


def test_text_lines_quote_the_path_and_show_no_secret() -> None:
    log = AccessLog(
        LogSettings(format="text", query_params=("page",)), io.BytesIO(), TrustedProxies()
    )
    line = log.line(_record()).decode()
    assert line.startswith("2023-11-14T22:13:20.250Z ")
    assert ' 10.1.2.3 GET "/a?page=1" 200 1B ' in line
    assert "cache=hit route=api total_ms=0.412 upstream_ms=-" in line
    assert line.endswith("\n") and line.count("\n") == 1
    assert not any(secret in line for secret in SECRETS)


@given(st.floats(min_value=0, max_value=1e12) | st.integers(0, 10**12).map(lambda us: us / 1e6))
def test_milliseconds_are_written_as_the_float_they_always_were(seconds: float) -> None:
    assert ms_text(seconds) == str(int(seconds * 1e6) / 1000)


def test_text_lines_show_milliseconds_and_the_time_as_before() -> None:
    log = AccessLog(LogSettings(format="text"), io.BytesIO(), TrustedProxies())
    for when, total, upstream, time, times in [
        (1_700_000_000.0, 0.0, 0.0, "20.000Z", "total_ms=0.0 upstream_ms=0.0"),
        (1_700_000_000.9991, 1.5, 0.0123, "20.999Z", "total_ms=1500.0 upstream_ms=12.3"),
        (1_700_000_001.0071, 0.00000099, 0.0010101, "21.007Z", "total_ms=0.0 upstream_ms=1.01"),
        # Never measured, but written as ever: truncated toward 0 (int()), not floored.
        (1_700_000_002.0, -0.0000005, -0.0025, "22.000Z", "total_ms=0.0 upstream_ms=-2.5"),
    ]:
        no_ids = (None, None)
        record = (when, "GET", "/", "api", 200, "miss", upstream, total, 1, None, (), (), *no_ids)
        line = log.line(record).decode()
        assert line.startswith(f"2023-11-14T22:13:{time} - GET ")
        assert line.endswith(f" {times}\n")


async def test_a_stdout_nobody_reads_drops_lines_instead_of_blocking() -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "wb")
    log = AccessLog(LogSettings(), stream, TrustedProxies(), max_pending=1000, max_batches=2)
    log.start()
    record = _record("/" + "x" * 2000)
    try:
        for _ in range(20):  # far more than the 64 KiB a pipe holds, in batches
            for _ in range(1000):
                log.add(record)
            log._flush()
            await asyncio.sleep(0.01)
        # The writer is stuck in write(); the loop went on and counted what it dropped.
        assert log.dropped > 0
        assert log.written < 20_000
    finally:
        os.close(read_end)  # the writer's write fails now, and it can stop
        await asyncio.to_thread(log.close)
        stream.close()


async def test_the_process_logs_json_lines_on_stdout_without_secrets(
    origin: Origin, proxy_process: Callable[..., ProxyProcess]
) -> None:
    proxy = proxy_process(
        origin.url,
        cache={"ttl": 30},
        routes=[{"name": "api", "match": {"prefix": "/api/"}}],
        admin={"token": "ADMINSECRET"},
        log={"format": "json", "query_params": ["page"], "sample_hits": 1},
    )
    base = f"http://127.0.0.1:{proxy.port}"
    headers = {"Authorization": "Bearer TOPSECRET", "Cookie": "sid=COOKIESECRET"}
    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # a miss, then a hit
            async with http.get(f"{base}/api/q?page=2&api_key=QUERYSECRET") as resp:
                await resp.read()
        async with http.get(f"{base}/other", headers=headers) as resp:
            await resp.read()
        async with http.get(
            f"http://127.0.0.1:{proxy.admin_port}/metrics",
            headers={"Authorization": "Bearer ADMINSECRET"},
        ) as resp:
            assert resp.status == 200
    proxy.proc.send_signal(signal.SIGTERM)
    out, _ = proxy.proc.communicate(timeout=15)
    assert proxy.proc.returncode == 0, out
    json_lines = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    lines = [x for x in json_lines if "logger" not in x]  # the rest: the process's own log
    assert any(x.get("logger") == "cacheproxy" for x in json_lines)  # log.format: json there too
    assert [(x["path"], x["route"], x["cache"]) for x in lines] == [
        ("/api/q?page=2", "api", "miss"),
        ("/api/q?page=2", "api", "hit"),
        ("/other", "default", "miss"),  # with credentials: looked up, not stored
    ]
    first = lines[0]
    assert set(first) == {
        "time",
        "client",
        "method",
        "path",
        "route",
        "status",
        "cache",
        "bytes",
        "upstream_ms",
        "total_ms",
        "request_id",  # made by the proxy: the client sent none
    }
    assert len({x["request_id"] for x in lines}) == 3
    assert (first["method"], first["status"], first["client"]) == ("GET", 200, "127.0.0.1")
    assert first["upstream_ms"] > 0 and first["total_ms"] >= first["upstream_ms"]
    assert first["bytes"] > len(b"body of /api/q?page=2&api_key=QUERYSECRET")
    assert lines[1]["upstream_ms"] is None  # a hit never went upstream
    assert not any(secret in out for secret in SECRETS)


def test_a_batch_is_written_as_its_lines_one_by_one() -> None:
    """The writer formats a batch in one go, keeping the time's text from line to line:
    the same lines as each formatted alone, whether a line shares its millisecond or
    second with the one before or not."""
    times = [1_700_000_000.0001, 1_700_000_000.0004, 1_700_000_000.0021, 1_700_000_001.5, 5.0]
    ids = [(f"id-{i}", "up" if i % 2 else None) for i in range(len(times))]
    batch: list[Record] = [
        (
            when,
            "GET",
            f"/a/{i}",
            "api",
            200,
            "bypass",
            0.001 * i,
            0.002,
            i,
            "10.0.0.1",
            (),
            (),
            *ids[i],
        )
        for i, when in enumerate(times)
    ]
    log = AccessLog(LogSettings(format="text"), io.BytesIO(), TrustedProxies())
    alone = [
        AccessLog(LogSettings(format="text"), io.BytesIO(), TrustedProxies()).line(r).decode()
        for r in batch
    ]
    assert log.texts(batch) == "".join(alone)
    assert alone[1].startswith(iso_time(times[1]) + " ") and alone[4].startswith("1970-")


def test_a_path_that_needs_quoting_is_written_as_json_writes_it() -> None:
    log = AccessLog(LogSettings(format="text"), io.BytesIO(), TrustedProxies())
    for path in ['/a"b', "/a\\b", "/a\x01b", "/caf\u00e9\u2028", "/plain"]:
        record = (1.0, "GET", f"{path}?k=v", "api", 599, "miss", None, 0.0, 1, None, (), ())
        line = log.line((*record, None, None)).decode()
        assert f" GET {orjson.dumps(path).decode()} 599 1B " in line
