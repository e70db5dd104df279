"""OpenTelemetry tracing (`tracing:`): the spans of a request, their attributes, sampling, the
W3C trace context in and out, and the export over OTLP/HTTP to a receiver on loopback."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from proxy.server.app import ProxyServer
from tests.conftest import Origin, StartProxy, free_port, get
from tests.redis_servers import RedisServer

ROUTES = [
    {"name": "live", "match": {"prefix": "/live/"}, "cache": False},
    {"name": "api", "match": {"prefix": "/api/"}},
]
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SAMPLED = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


def closed_endpoint() -> str:
    """An OTLP endpoint nobody listens on: these tests read the spans in memory."""
    return f"http://127.0.0.1:{free_port()}/v1/traces"


async def traced_proxy(
    start_proxy: StartProxy, origin: Origin, ratio: float, **sections: Any
) -> tuple[ProxyServer, InMemorySpanExporter]:
    tracing = {"sample_ratio": ratio, "endpoint": closed_endpoint(), "timeout": 0.5}
    sections = {"cache": {"ttl": 30}, **sections}
    proxy = await start_proxy(origin.url, routes=ROUTES, tracing=tracing, **sections)
    assert proxy.tracing is not None
    spans = InMemorySpanExporter()
    proxy.tracing.provider.add_span_processor(SimpleSpanProcessor(spans))
    return proxy, spans


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def carried(span: ReadableSpan) -> str:
    """The `traceparent` that names `span` (its flags as the SDK set them: sampled, random)."""
    ctx = span.context
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


async def test_a_miss_then_a_hit_make_one_server_span_each_with_their_children(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy, exporter = await traced_proxy(start_proxy, origin, 1.0)
    agent = {"User-Agent": "tracing-test/1"}
    miss, _ = await get(http, proxy, "/api/item?secret=1", headers=agent)
    assert miss.status == 200
    named = by_name(exporter.get_finished_spans())
    [server] = named["GET api"]
    assert server.kind is SpanKind.SERVER and server.parent is None
    attrs = dict(server.attributes or {})
    assert attrs == {
        "http.request.method": "GET",
        "url.path": "/api/item",  # never the query
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "server.address": "127.0.0.1",
        "client.address": "127.0.0.1",
        "user_agent.original": "tracing-test/1",
        "http.route": "api",
        "cacheproxy.route": "api",
        "cacheproxy.request_id": miss.headers["X-Request-ID"],
        "cacheproxy.cache": "miss",
        "http.response.status_code": 200,
    }
    [lookup] = named["cache lookup"]
    [client] = named["GET"]
    [store] = named["cache store"]
    [head] = named["upstream head"]
    [body] = named["upstream body"]
    for child in (lookup, client, store):
        assert parent_id(child) == span_id(server)
    [connect] = named["upstream connect"]  # the first exchange opened the connection
    assert parent_id(head) == parent_id(body) == parent_id(connect) == span_id(client)
    assert "upstream queue wait" not in named  # a slot was free
    assert client.kind is SpanKind.CLIENT
    assert client.attributes is not None
    assert client.attributes["http.response.status_code"] == 200
    assert client.attributes["server.address"] == "127.0.0.1"
    assert client.attributes["url.full"] == f"{origin.url}/api/item"
    assert store.attributes == {"cacheproxy.stored": True}
    assert {trace_id(s) for s in named_spans(named)} == {trace_id(server)}
    # The upstream heard of the proxy's exchange span, in the proxy's trace.
    sent = origin.requests[-1].headers.getall("traceparent")
    assert sent == [carried(client)]

    exporter.clear()
    hit, _ = await get(http, proxy, "/api/item?secret=1")
    assert hit.headers["X-Cache"] == "HIT"
    named = by_name(exporter.get_finished_spans())
    assert sorted(named) == ["GET api", "cache lookup"]
    [server] = named["GET api"]
    assert server.attributes is not None and server.attributes["cacheproxy.cache"] == "hit"
    assert parent_id(named["cache lookup"][0]) == span_id(server)


def named_spans(named: dict[str, list[ReadableSpan]]) -> list[ReadableSpan]:
    return [span for spans in named.values() for span in spans]


async def test_sample_ratio_zero_records_nothing_and_sends_no_trace_upstream(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy, exporter = await traced_proxy(start_proxy, origin, 0.0)
    for path in ("/api/a", "/api/a", "/live/b"):
        resp, _ = await get(http, proxy, path)
        assert resp.status == 200
    assert exporter.get_finished_spans() == ()
    assert all("traceparent" not in r.headers for r in origin.requests)


async def test_a_sampled_traceparent_continues_on_a_route_that_does_not_cache(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy, exporter = await traced_proxy(start_proxy, origin, 0.0)
    headers = {"traceparent": SAMPLED, "tracestate": "vendor=abc"}
    resp, _ = await get(http, proxy, "/live/x", headers=headers)
    assert resp.status == 200
    named = by_name(exporter.get_finished_spans())
    [server] = named["GET live"]
    [client] = named["GET"]
    assert f"{trace_id(server):032x}" == CLIENT_TRACE
    assert f"{parent_id(server):016x}" == CLIENT_SPAN
    assert server.links == ()
    seen = origin.requests[-1].headers
    assert seen.getall("traceparent") == [carried(client)]
    assert carried(client).startswith(f"00-{CLIENT_TRACE}-")
    assert seen.getall("tracestate") == ["vendor=abc"]


async def test_a_sampled_traceparent_is_linked_on_a_caching_route_never_sent_upstream(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy, exporter = await traced_proxy(start_proxy, origin, 0.0)
    headers = {"traceparent": SAMPLED, "tracestate": "vendor=abc"}
    resp, _ = await get(http, proxy, "/api/linked", headers=headers)
    assert resp.status == 200
    named = by_name(exporter.get_finished_spans())
    [server] = named["GET api"]
    [client] = named["GET"]
    assert server.parent is None
    assert f"{trace_id(server):032x}" != CLIENT_TRACE
    [link] = server.links
    assert f"{link.context.trace_id:032x}" == CLIENT_TRACE
    assert f"{link.context.span_id:016x}" == CLIENT_SPAN
    seen = origin.requests[-1].headers
    assert seen.getall("traceparent") == [carried(client)]
    assert trace_id(client) == trace_id(server)
    assert "tracestate" not in seen  # the client's: not part of the cache key


async def test_an_unsampled_traceparent_is_not_recorded_and_not_sent_on_a_caching_route(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy, exporter = await traced_proxy(start_proxy, origin, 1.0)
    unsampled = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"
    await get(http, proxy, "/api/u", headers={"traceparent": unsampled})
    await get(http, proxy, "/live/u", headers={"traceparent": unsampled})
    assert exporter.get_finished_spans() == ()
    api, live = origin.requests
    assert "traceparent" not in api.headers
    assert live.headers.getall("traceparent") == [unsampled]  # its trace goes on unrecorded


@pytest.mark.parametrize(
    "value",
    [
        f"00-{'0' * 32}-{CLIENT_SPAN}-01",  # an all-zero trace id
        f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01",  # the forbidden version
        f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-extra",  # version 00 has four fields
        "not a traceparent",
    ],
)
async def test_an_invalid_traceparent_is_as_if_none_came(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession, value: str
) -> None:
    proxy, exporter = await traced_proxy(start_proxy, origin, 1.0)
    await get(http, proxy, "/live/i", headers={"traceparent": value})
    [server] = by_name(exporter.get_finished_spans())["GET live"]
    assert server.parent is None and server.links == ()
    assert f"{trace_id(server):032x}" != CLIENT_TRACE


async def test_an_upstream_failure_marks_the_spans_as_errors(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    tracing = {"sample_ratio": 1, "endpoint": closed_endpoint(), "timeout": 0.5}
    proxy = await start_proxy(f"http://127.0.0.1:{free_port()}", routes=ROUTES, tracing=tracing)
    assert proxy.tracing is not None
    exporter = InMemorySpanExporter()
    proxy.tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    resp, _ = await get(http, proxy, "/live/down")
    assert resp.status == 502
    named = by_name(exporter.get_finished_spans())
    [server] = named["GET live"]
    [client] = named["GET"]
    assert not server.status.is_ok and not client.status.is_ok
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 502


async def test_spans_are_exported_over_otlp_http_to_a_receiver(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    received: list[ExportTraceServiceRequest] = []
    auth: list[str | None] = []

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        auth.append(request.headers.get("Authorization"))
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        tracing = {
            "sample_ratio": 1,
            "endpoint": f"http://127.0.0.1:{port}/v1/traces",
            "service_name": "edge-cache",
            "headers": {"Authorization": "Bearer collector-key"},
            "export_interval": 0.05,
        }
        proxy = await start_proxy(origin.url, cache={"ttl": 30}, routes=ROUTES, tracing=tracing)
        resp, _ = await get(http, proxy, "/api/exported")
        assert resp.status == 200
        for _ in range(200):  # the batch processor exports every 50 ms
            names = {
                s.name
                for m in received
                for rs in m.resource_spans
                for ss in rs.scope_spans
                for s in ss.spans
            }
            if "GET api" in names and "cache store" in names:
                break
            await asyncio.sleep(0.05)
        assert {"GET api", "cache lookup", "GET", "cache store"} <= names
        resource = received[0].resource_spans[0].resource
        attrs = {a.key: a.value.string_value for a in resource.attributes}
        assert attrs["service.name"] == "edge-cache"
        assert set(auth) == {"Bearer collector-key"}
    finally:
        await runner.cleanup()


async def test_a_redis_lookup_is_a_child_of_the_cache_lookup(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    redis = {"url": redis_server.url, "key_prefix": f"t{uuid.uuid4().hex[:6]}:", "timeout": 2}
    cache = {"tiers": ["memory", "redis"], "ttl": 60}
    proxy, exporter = await traced_proxy(start_proxy, origin, 1.0, redis=redis, cache=cache)
    await get(http, proxy, "/api/shared")  # a miss in both tiers, stored in both
    named = by_name(exporter.get_finished_spans())
    [server] = named["GET api"]
    [lookup] = named["cache lookup"]
    [in_redis] = named["cache lookup redis"]
    assert parent_id(lookup) == span_id(server)
    assert parent_id(in_redis) == span_id(lookup)
    assert in_redis.attributes == {"cacheproxy.found": False}
    assert lookup.end_time is not None and in_redis.end_time is not None
    assert lookup.end_time >= in_redis.end_time  # the lookup spans both tiers


async def test_a_wait_for_an_upstream_slot_and_a_reused_connection_show_as_such(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    origin.delay = 0.2
    upstream = {"url": origin.url, "pool": {"max_connections": 1}}
    proxy, exporter = await traced_proxy(start_proxy, origin, 1.0, upstream=upstream)
    first, second = await asyncio.gather(
        get(http, proxy, "/live/one"), get(http, proxy, "/live/two")
    )
    assert first[0].status == second[0].status == 200
    named = by_name(exporter.get_finished_spans())
    clients = {span_id(s): s for s in named["GET"]}
    assert len(clients) == 2
    [waited] = named["upstream queue wait"]  # the second waited for the first's slot
    [connect] = named["upstream connect"]  # and then reused its connection
    assert parent_id(waited) in clients and parent_id(connect) in clients
    assert parent_id(waited) != parent_id(connect)
    assert waited.end_time is not None and waited.start_time is not None
    assert waited.end_time - waited.start_time >= 100_000_000  # most of the first's 0.2 s


@pytest.mark.parametrize(
    ("tracestate", "forwarded"),
    [
        ("vendor=abc, other=x y", "vendor=abc,other=x y"),
        ("bad value!!", None),  # not key=value: dropped whole
        (",".join(f"k{i}=v" for i in range(33)), None),  # over 32 members
        ("a=1,a=2", None),  # a key twice
    ],
)
async def test_a_bad_tracestate_is_dropped_without_a_log_line(
    origin: Origin,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    tracestate: str,
    forwarded: str | None,
) -> None:
    proxy, exporter = await traced_proxy(start_proxy, origin, 0.0)
    await get(http, proxy, "/live/s", headers={"traceparent": SAMPLED, "tracestate": tracestate})
    assert len(exporter.get_finished_spans()) > 0
    assert origin.requests[-1].headers.getall("tracestate", []) == (
        [forwarded] if forwarded else []
    )
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry.trace")]
