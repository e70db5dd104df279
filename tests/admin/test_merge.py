"""One admin response out of several workers' responses (proxy/admin/merge.py): pure, no I/O."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.admin.merge import (
    MERGE_HEADER,
    MissingResponse,
    WorkerResponse,
    merge_json,
    merge_responses,
    parse_rules,
)
from proxy.observe.documents import MERGE_RULES
from proxy.observe.stats_window import describe
from tests.observe.test_stats_window import latencies, totals


def test_numbers_add_up_and_objects_merge_key_by_key() -> None:
    a = {"hits": 3, "bytes": 1.5, "shared": {"hits": 1, "subscribed": True}, "only_a": 7}
    b = {"hits": 4, "bytes": 2.0, "shared": {"hits": 2, "subscribed": True}, "only_b": [1]}
    assert merge_json([a, b], {}) == {
        "hits": 7,
        "bytes": 3.5,
        "shared": {"hits": 3, "subscribed": True},
        "only_a": 7,
        "only_b": [1],
    }


def test_status_takes_the_worst_booleans_all_lists_concatenate_strings_the_first() -> None:
    docs = [
        {"status": "healthy", "ok": True, "items": [1], "name": "a", "checks": {"status": "up"}},
        {
            "status": "degraded",
            "ok": True,
            "items": [2, 3],
            "name": "b",
            "checks": {"status": "up"},
        },
        {"status": "healthy", "ok": False, "items": [], "name": "c", "checks": {"status": "down"}},
    ]
    assert merge_json(docs, {}) == {
        "status": "degraded",
        "ok": False,
        "items": [1, 2, 3],
        "name": "a",
        "checks": {"status": "down"},
    }
    assert merge_json(["healthy", "unhealthy", "degraded"], {}, "status") == "unhealthy"


def test_an_upstream_whose_circuit_one_worker_opened_is_down_in_the_merged_health() -> None:
    # Each worker has its own breakers: the response must not hide the one that opened.
    def health(circuit: str) -> dict[str, Any]:
        up = "up" if circuit == "closed" else "down"
        upstreams = {"default": {"status": up, "circuit": circuit}}
        return {"status": "healthy", "checks": {"upstream": {"status": up, "upstreams": upstreams}}}

    merged = merge_json([health("closed"), health("open")], {})
    assert merged["checks"]["upstream"]["status"] == "down"
    assert merged["checks"]["upstream"]["upstreams"]["default"]["status"] == "down"


def test_nulls_never_hide_a_value_and_mixed_types_take_the_first() -> None:
    assert merge_json([None, "redis down", None], {}) == "redis down"
    assert merge_json([{"error": None}, {"error": "timeout"}], {}) == {"error": "timeout"}
    assert merge_json([None, None], {}) is None
    assert merge_json([1, "x"], {}) == 1
    assert merge_json([True, 1], {}) is True  # a boolean is not a number to add


def test_the_merge_header_sets_per_key_rules() -> None:
    rules = parse_rules("count=max, oldest = MIN,name=first, bad, x=avg, =sum")
    assert rules == {"count": "max", "oldest": "min", "name": "first"}
    docs = [
        {"count": 5, "oldest": 10, "n": {"count": 2}},
        {"count": 5, "oldest": 4, "n": {"count": 9}},
    ]
    assert merge_json(docs, rules) == {"count": 5, "oldest": 4, "n": {"count": 9}}


def _response(status: int, doc: Any, **headers: str) -> WorkerResponse:
    return WorkerResponse(status, "application/json", orjson.dumps(doc), headers)


def test_the_worst_status_wins_with_its_headers_and_the_merge_header_is_dropped() -> None:
    ok = _response(200, {"purged": 2}, **{"Cacheproxy-Merge": "purged=sum"})
    failed = _response(503, {"purged": 1, "error": "purge_incomplete"}, **{"Retry-After": "1"})
    merged = merge_responses("POST", [ok, failed], [])
    assert merged.status == 503
    assert orjson.loads(merged.body) == {"purged": 3, "error": "purge_incomplete"}
    assert merged.headers == [("Retry-After", "1")]
    merged = merge_responses("GET", [ok, ok], [])
    assert (merged.status, merged.headers) == (200, [])


def test_a_worker_that_did_not_respond_is_named_and_degrades_a_status() -> None:
    health = _response(200, {"status": "healthy", "checks": {}})
    late = MissingResponse(1, 4242, "no answer within 3 s")
    merged = merge_responses("GET", [health], [late])
    assert merged.status == 200
    assert orjson.loads(merged.body) == {
        "status": "degraded",
        "checks": {},
        "unanswered": [{"worker": 1, "pid": 4242, "error": "no answer within 3 s"}],
    }
    # A change that did not reach every worker is incomplete, whatever the others said.
    merged = merge_responses("POST", [_response(200, {"purged": 1})], [late])
    assert merged.status == 503
    assert orjson.loads(merged.body)["error"] == "incomplete"
    # No response at all.
    merged = merge_responses("GET", [], [late])
    assert merged.status == 503
    assert orjson.loads(merged.body)["status"] == "unhealthy"


def test_responses_that_are_not_json_pass_when_identical_and_are_refused_otherwise() -> None:
    page = WorkerResponse(200, "text/html; charset=utf-8", b"<h1>cacheproxy</h1>", {})
    assert merge_responses("GET", [page, page], []).body == page.body
    assert merge_responses("GET", [page, page], []).content_type == page.content_type
    metrics = [WorkerResponse(200, "text/plain", f"requests {n}\n".encode(), {}) for n in (3, 4)]
    merged = merge_responses("GET", metrics, [])
    assert merged.status == 502
    assert orjson.loads(merged.body)["error"] == "not_mergeable"
    broken = WorkerResponse(200, "application/json", b"{not json", {})
    assert merge_responses("GET", [broken, _response(200, {})], []).status == 502


def test_a_sum_rule_adds_lists_of_numbers_item_by_item() -> None:
    docs = [{"buckets": [1, 0, 2], "ids": [1]}, {"buckets": [0, 3, 1], "ids": [2]}]
    assert merge_json(docs, {"buckets": "sum"}) == {"buckets": [1, 3, 3], "ids": [1, 2]}


def _performance(hits: int, misses: int, fast: int, slow: int) -> dict[str, Any]:
    """A worker's /performance/summary, in part: fast (cached) and slow (uncached) responses."""
    window = describe(
        totals(
            requests=fast + slow,
            hits=hits,
            misses=misses,
            cached=fast,
            cached_seconds=fast * 0.001,
            uncached=slow,
            uncached_seconds=slow * 0.1,
            latency=latencies(*([0.001] * fast), *([0.1] * slow)),
        ),
        60.0,
    )
    rate = hits / (hits + misses)
    return {
        "cache": {"hits": hits, "misses": misses, "hit_rate": rate, "ttl_seconds": {"a": 30}},
        "connections": {"total_requests": slow, "opened": 1, "reuse_rate": 0.0},
        "response_times": window["response_times"],
        "window": window,
    }


def test_merged_performance_documents_add_counts_and_recompute_ratios() -> None:
    docs = [_performance(9, 1, 9, 1), _performance(1, 9, 1, 9)]
    # As the workers respond to /performance/*: with the rules their documents go by.
    responses = [_response(200, doc, **{MERGE_HEADER: MERGE_RULES}) for doc in docs]
    merged = orjson.loads(merge_responses("GET", responses, []).body)
    assert merged["cache"] == {"hits": 10, "misses": 10, "hit_rate": 0.5, "ttl_seconds": {"a": 30}}
    assert merged["connections"]["reuse_rate"] == 0.8  # 10 requests, 2 connections opened
    window = merged["window"]
    assert (window["requests"], window["seconds"], window["requests_per_second"]) == (20, 60, 0.333)
    assert window["raw_counts"]["latency_buckets"] == [
        a + b
        for a, b in zip(
            docs[0]["window"]["raw_counts"]["latency_buckets"],
            docs[1]["window"]["raw_counts"]["latency_buckets"],
            strict=True,
        )
    ]
    rt = merged["response_times"]
    assert rt == window["response_times"]
    assert (rt["avg_cached_ms"], rt["avg_uncached_ms"], rt["speedup"]) == (1.0, 100.0, 100.0)
    assert abs(rt["p50_ms"] - 1.0) <= 0.01 and abs(rt["p99_ms"] - 100) <= 1  # within 1%


def test_ratios_are_recomputed_when_a_worker_did_not_respond_too() -> None:
    responses = [
        _response(200, _performance(9, 1, 9, 1), **{MERGE_HEADER: MERGE_RULES}),
        _response(200, _performance(8, 2, 9, 1), **{MERGE_HEADER: MERGE_RULES}),
    ]
    merged = orjson.loads(merge_responses("GET", responses, [MissingResponse(2, 42, "late")]).body)
    assert merged["cache"]["hit_rate"] == 0.85  # 17 of 20, not 0.9 + 0.8
    assert merged["unanswered"] == [{"worker": 2, "pid": 42, "error": "late"}]


def test_a_document_that_only_looks_like_a_summary_is_merged_as_it_is() -> None:
    responses = [_response(200, {"reuse_rate": 0.5, "raw_counts": {}, "seconds": 1})] * 2
    merged = orjson.loads(merge_responses("GET", responses, []).body)
    assert merged == {"reuse_rate": 1.0, "raw_counts": {}, "seconds": 2}
