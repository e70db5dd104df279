"""Memory per stored entry: the proxy's MemoryStore against a plain dict, in process.

    python -m bench.entry_memory proxy --entries 100000    # prints one JSON line
    python -m bench.entry_memory dict --entries 100000

`proxy` fills the real MemoryStore with Entry objects built as the cache stage builds them
(forwarded upstream headers, cache keys from the route's key builder); `dict` is the
yardstick: key -> (header bytes, body bytes, expiry). Both get fresh 2 KB bodies, header
values and keys, as responses read from sockets would be. Real memory is tracemalloc's
count of what the fill left allocated; tracked objects are `len(gc.get_objects())` after
a full collection (which untracks tuples holding only atomic values), before and after.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from collections.abc import Callable
from email.utils import formatdate

import yaml
from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy

BODY_SIZE = 2048
HOST = "127.0.0.1:9000"


def _body(i: int) -> bytes:
    return (b'{"i":%d,"data":"' % i).ljust(BODY_SIZE - 2, b"x") + b'"}'


def _head(i: int) -> bytes:
    """The upstream's header block, as bench/upstream.py sends it."""
    return (
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {BODY_SIZE}\r\nDate: {formatdate(usegmt=True)}\r\n"
        "Server: Python/3.11 aiohttp/3.11\r\nCache-Control: public, max-age=3600\r\n"
    ).encode()


_NAMES = {n.lower(): n for n in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.DATE, hdrs.SERVER)}
_NAMES["cache-control"] = hdrs.CACHE_CONTROL


def _parsed(head: bytes) -> CIMultiDictProxy[str]:
    """Like aiohttp's parser: known names are shared constants, values fresh strings."""
    out: CIMultiDict[str] = CIMultiDict()
    for line in head.decode("latin-1").split("\r\n")[:-1]:
        name, _, value = line.partition(": ")
        out.add(_NAMES.get(name.lower(), name), value)
    return CIMultiDictProxy(out)


def proxy_filler() -> tuple[Callable[[int], None], Callable[[], int]]:
    from proxy.cache.entry import Entry
    from proxy.cache.memory import MemoryStore
    from proxy.config.loader import parse_config
    from proxy.http.headers import forward_response_headers
    from proxy.pipeline.routes import RouteTable

    config = parse_config(
        yaml.safe_dump(
            {
                "upstream": {"url": f"http://{HOST}"},
                "cache": {"ttl": 3600, "max_memory": "4GB"},
                "routes": [{"name": "items", "match": {"prefix": "/api/"}}],
            }
        ),
        env={},
    )
    table = RouteTable(config)
    store = MemoryStore(4 << 30)
    request_headers = CIMultiDictProxy(CIMultiDict({"Host": "bench", "Accept": "*/*"}))

    def fill(i: int) -> None:
        path = f"/api/item/{i}"
        route = table.match("GET", path)
        rc = route.cache
        assert rc is not None
        host = route.upstream.host_header
        now = time.time()
        entry = Entry.build(
            status=200,
            reason="OK",
            headers=forward_response_headers(_parsed(_head(i))),
            body=_body(i),
            request_headers=request_headers,
            request_time=now,
            response_time=now,
            rules=rc.rules,
            primary=rc.keys.primary_key(host, path, "", request_headers),
            url_key=rc.keys.url_key(host, path, ""),
            path=path,
            tag_fields=rc.tags,
        )
        assert store.put(entry)

    return fill, lambda: len(store)


def dict_filler() -> tuple[Callable[[int], None], Callable[[], int]]:
    store: dict[str, tuple[bytes, bytes, float]] = {}

    def fill(i: int) -> None:
        store[f"{HOST}/api/item/{i}?"] = (_head(i), _body(i), time.time() + 3600)

    return fill, lambda: len(store)


def measure(side: str, entries: int) -> dict[str, float]:
    fill, count = (proxy_filler if side == "proxy" else dict_filler)()
    fill(-1)  # first-call allocations (caches, interned names) are not per entry
    gc.collect()
    objects = len(gc.get_objects())
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(entries):
        fill(i)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    added = count() - 1
    assert added == entries, (added, entries)
    return {
        "entries": entries,
        "bytes_per_entry": (after - before) / entries,
        "objects_per_entry": (len(gc.get_objects()) - objects) / entries,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=["proxy", "dict"])
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.side, args.entries)))
