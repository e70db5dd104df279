"""bench.run l2-hits: its premise (every hit read from Redis) and its figure."""

from __future__ import annotations

import time

from multidict import CIMultiDict

from bench.loadgen import Result
from bench.run import l2_config, l2_ratio
from proxy.cache.entry import Entry
from proxy.cache.memory import MemoryStore
from proxy.cache.policy import CacheRules
from proxy.config.cache import parse_size


def entry(room: bool) -> tuple[MemoryStore, Entry]:
    cache = l2_config("redis://127.0.0.1:1/0", room)["cache"]
    assert isinstance(cache, dict)
    store = MemoryStore(parse_size(cache.get("max_memory", "256MB")))
    headers = CIMultiDict({"Cache-Control": "public, max-age=3600"})
    now = time.time()
    built = Entry.build(
        status=200,
        reason="OK",
        headers=headers,
        body=b"x" * 1024,  # the bench upstream's --size
        request_headers=CIMultiDict(),
        request_time=now,
        response_time=now,
        rules=CacheRules(),
        primary="h/api/hot/1",
        url_key="h/api/hot/1",
        path="/api/hot/1",
    )
    return store, built


def test_the_l2_side_keeps_no_entry_in_memory_and_the_l1_side_does() -> None:
    store, built = entry(room=False)
    assert not store.put(built)
    store, built = entry(room=True)
    assert store.put(built)


def test_the_ratio_is_of_medians() -> None:
    l2 = Result("l2", [0.3, 0.4, 0.5])
    l1 = Result("l1", [0.1, 0.2, 9.0])
    get = Result("get", [0.1, 0.2, 0.3])
    assert l2_ratio(l2, l1, get) == 0.4 / (0.2 + 0.2)
