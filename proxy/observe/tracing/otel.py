"""Spans for sampled requests, exported over OTLP/HTTP by the SDK's batch processor.

Sampling is decided here, before the SDK is touched: a request without a sampled
`traceparent` is traced with probability `sample_ratio`, and one that is not traced costs a
header lookup and a random number (no span object, no context). A traced request gets a SERVER
span; its children (cache lookup, Redis lookup, upstream exchange and its phases, store) hang
from the span kept in `_SERVER`, which only a traced request sets.

The client's `traceparent` (W3C Trace Context): on a route that does not cache, the request's
trace continues it, and the upstream request carries that trace on (with the client's
`tracestate`). On a caching route nothing the client controls may reach the upstream unless
the cache key holds it, so the proxy starts a trace of its own there and links the client's
span to it.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import istr
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TraceState,
    set_span_in_context,
)
from yarl import URL

import proxy
from proxy.observe.metrics import CACHE_RESULT, REQUEST_ID, ROUTE, UNROUTED
from proxy.upstream.client import UpstreamClient
from proxy.upstream.connect import Connector
from proxy.upstream.guard import OriginGuard
from proxy.upstream.http1 import Connection, OriginKey, Pool, StreamedBody, UpstreamResponse
from proxy.upstream.targets import TargetGroup

if TYPE_CHECKING:
    from proxy.config.tracing import TracingSettings
    from proxy.config.upstream import Upstream
    from proxy.upstream.client import Observe
    from proxy.upstream.http1 import Interim

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

_TRACEPARENT = istr("traceparent")
_TRACESTATE = istr("tracestate")
_USER_AGENT = istr("User-Agent")
# version-trace_id-parent_id-flags (W3C Trace Context §3.2); a later version may append fields.
_PARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# A tracestate list-member (W3C Trace Context §3.3.1.3): key=value.
_STATE_MEMBER = re.compile(
    r"([a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)

# The traced request's SERVER span, as the context its children start in.
_SERVER: ContextVar[Context] = ContextVar("cacheproxy_trace")


def parse_traceparent(value: str, tracestate: str | None = None) -> SpanContext | None:
    """The client's span, from its `traceparent` (and `tracestate`); None: not a valid one."""
    m = _PARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    state = _trace_state(tracestate) if tracestate else TraceState()
    return SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(int(flags_hex, 16) & 1),
        trace_state=state,
    )


def _trace_state(value: str) -> TraceState:
    """The client's `tracestate`, or an empty one when it is not valid (W3C §3.3.1.1 lets a
    vendor drop it). Checked here: the SDK's parser logs a warning, with the client's text,
    for each bad member."""
    members: dict[str, str] = {}
    for member in value.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        m = _STATE_MEMBER.fullmatch(member)
        if m is None or m.group(1) in members or len(members) == 32:
            return TraceState()
        members[m.group(1)] = m.group(2)
    return TraceState(list(members.items()))


def trace_lines(span: Span) -> list[str]:
    """The header lines that carry `span` on to the next hop."""
    ctx = span.get_span_context()
    lines = [f"traceparent: 00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"]
    state = ctx.trace_state.to_header()
    if state:
        lines.append(f"tracestate: {state}")
    return lines


def _not_trace_field(line: str) -> bool:
    head = line[:12].lower()
    return not (head.startswith("traceparent:") or head.startswith("tracestate:"))


class Tracing:
    """The process's tracer provider, its sampling decision and its spans."""

    def __init__(
        self, settings: TracingSettings, rand: Callable[[], float] = random.random
    ) -> None:
        resource = Resource.create(
            {"service.name": settings.service_name, "service.version": proxy.__version__}
        )
        # The sampling is ours (see `wrap`): the SDK records every span it is asked for.
        self.provider = TracerProvider(sampler=ALWAYS_ON, resource=resource, shutdown_on_exit=False)
        exporter = OTLPSpanExporter(
            endpoint=settings.endpoint,
            headers={name: value.get_secret_value() for name, value in settings.headers.items()},
            timeout=settings.timeout,
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=settings.max_queue_size,
                schedule_delay_millis=settings.export_interval * 1000,
                max_export_batch_size=settings.max_export_batch_size,
                export_timeout_millis=settings.timeout * 1000,
            )
        )
        self.tracer = self.provider.get_tracer("cacheproxy", proxy.__version__)
        # Set for traced requests only: `traced.get(None) is None` is the hooks' cheap test.
        self.traced = _SERVER
        self.ratio = settings.sample_ratio
        self._rand = rand

    def close(self) -> None:
        """Export what is waiting (within the export timeout) and stop; blocks."""
        self.provider.shutdown()

    def wrap(self, handle: Handler, caching: Callable[[web.BaseRequest], bool]) -> Handler:
        """`handle`, tracing the requests sampled. `caching(request)`: whether its route
        caches (the client's trace is linked there, not continued)."""
        ratio, rand, traced = self.ratio, self._rand, self._traced

        def handler(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
            value = request.headers.get(_TRACEPARENT)
            if value is None:
                if ratio == 0.0 or rand() >= ratio:  # 0: not even a random number
                    return handle(request)
                return traced(request, handle, None, caching)
            remote = parse_traceparent(value, request.headers.get(_TRACESTATE))
            if remote is None:  # not a trace context at all: as if none came
                if rand() >= ratio:
                    return handle(request)
                return traced(request, handle, None, caching)
            if not remote.trace_flags.sampled:
                return handle(request)  # its trace goes on unrecorded (ParentBased)
            return traced(request, handle, remote, caching)

        return handler

    async def _traced(
        self,
        request: web.BaseRequest,
        handle: Handler,
        remote: SpanContext | None,
        caching: Callable[[web.BaseRequest], bool],
    ) -> web.StreamResponse:
        links: Sequence[Link] = ()
        parent = Context()
        if remote is not None:
            if caching(request):
                links = (Link(remote),)
            else:
                parent = set_span_in_context(NonRecordingSpan(remote))
        headers = request.headers
        host = headers.get("Host")
        attributes: dict[str, str | int] = {
            "http.request.method": request.method,
            "url.path": request.raw_path.partition("?")[0],
            "url.scheme": request.scheme,
            "network.protocol.version": f"{request.version.major}.{request.version.minor}",
        }
        if host:
            attributes["server.address"] = URL(f"//{host}").host or host
        if request.remote:
            attributes["client.address"] = request.remote
        agent = headers.get(_USER_AGENT)
        if agent is not None:
            attributes["user_agent.original"] = agent
        span = self.tracer.start_span(
            request.method, parent, SpanKind.SERVER, attributes=attributes, links=links
        )
        token = _SERVER.set(set_span_in_context(span))
        try:
            response = await handle(request)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            self._finish(span, request, None)
            raise
        finally:
            _SERVER.reset(token)
        self._finish(span, request, response)
        return response

    @staticmethod
    def _finish(span: Span, request: web.BaseRequest, response: web.StreamResponse | None) -> None:
        method = request.method
        route = request.get(ROUTE, UNROUTED)
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("cacheproxy.route", route)
        request_id = request.get(REQUEST_ID)
        if request_id is not None:
            span.set_attribute("cacheproxy.request_id", request_id)
        if response is not None:
            cache = getattr(response, "cache_result", None) or response.get(CACHE_RESULT, "none")
            span.set_attribute("cacheproxy.cache", cache)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        span.end()

    def start(self, name: str, parent: Span | None = None) -> Span | None:
        """A child span of the traced request's (or of `parent`); None: not traced."""
        context = _SERVER.get(None)
        if context is None:
            return None
        if parent is not None:
            context = set_span_in_context(parent)
        return self.tracer.start_span(name, context)

    def upstream_client(
        self, config: Upstream, origins: Mapping[str, str] | None, observe: Observe | None
    ) -> UpstreamClient:
        """An upstream client whose exchanges for traced requests are CLIENT spans."""
        return TracedUpstreamClient(self, config, origins, observe)


# The upstream exchange span of the traced request whose exchange this task is running.
_EXCHANGE: ContextVar[Context] = ContextVar("cacheproxy_exchange")


def _timed(tracer: Tracer, name: str) -> Span | None:
    """A child span of the traced exchange running, if one is."""
    exchange = _EXCHANGE.get(None)
    return None if exchange is None else tracer.start_span(name, exchange)


def _failed(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    span.end()


class _TracedPool(Pool):
    """The pool, with each connection opened for a traced exchange as a span."""

    def __init__(
        self,
        tracer: Tracer,
        connect_timeout: float,
        read_timeout: float,
        keepalive_timeout: float,
        connector: Connector,
    ) -> None:
        super().__init__(connect_timeout, read_timeout, keepalive_timeout, connector)
        self.tracer = tracer

    async def _connect(self, key: OriginKey, deadline: float = math.inf) -> Connection:
        span = _timed(self.tracer, "upstream connect")
        if span is None:
            return await super()._connect(key, deadline)
        try:
            conn = await super()._connect(key, deadline)
        except BaseException as exc:
            _failed(span, exc)
            raise
        span.end()
        return conn


class TracedUpstreamClient(UpstreamClient):
    """Each exchange of a traced request: a CLIENT span from the send to the release of the
    response, carried upstream in `traceparent`, with its head and body as children."""

    def __init__(
        self,
        tracing: Tracing,
        config: Upstream,
        origins: Mapping[str, str] | None = None,
        observe: Observe | None = None,
    ) -> None:
        super().__init__(config, origins, observe)
        self.tracing = tracing

    def _new_pool(self) -> Pool:
        pool, timeouts = self.config.pool, self.config.timeouts
        return _TracedPool(
            self.tracing.tracer,
            timeouts.connect,
            timeouts.read,
            pool.keepalive_timeout,
            connector=self.connector(),
        )

    async def _queue(
        self, guard: OriginGuard, wait: float, background: bool, endpoint: str
    ) -> bool:
        span = _timed(self.tracing.tracer, "upstream queue wait")
        if span is None:
            return await super()._queue(guard, wait, background, endpoint)
        try:
            probe = await super()._queue(guard, wait, background, endpoint)
        except BaseException as exc:
            _failed(span, exc)
            raise
        span.end()
        return probe

    async def send(
        self,
        method: str,
        upstream: TargetGroup,
        target: str,
        fields: Sequence[str],
        body: bytes | StreamedBody | None = None,
        route: str = "",
        interim: Interim | None = None,
        content_length: int | None = None,
        background: bool = False,
        upgrade: bool = False,
    ) -> UpstreamResponse:
        server = _SERVER.get(None)
        if server is None:
            return await super().send(
                method,
                upstream,
                target,
                fields,
                body,
                route,
                interim,
                content_length,
                background,
                upgrade,
            )
        tracer = self.tracing.tracer
        origin = upstream.targets[0].origin  # the first target's, when there are several
        url = URL(origin)
        started = time.time_ns()
        span = tracer.start_span(
            method,
            server,
            SpanKind.CLIENT,
            attributes={
                "http.request.method": method,
                "server.address": url.host or "",
                "server.port": url.port or 0,
                "url.full": origin + target.partition("?")[0],
                "cacheproxy.route": route,
            },
            start_time=started,
        )
        # The client's own trace fields never go on as they came: ours replace them.
        fields = [line for line in fields if _not_trace_field(line)] + trace_lines(span)
        inside = set_span_in_context(span)
        token = _EXCHANGE.set(inside)  # for the queue wait and the connect, if any
        try:
            up = await super().send(
                method,
                upstream,
                target,
                fields,
                body,
                route,
                interim,
                content_length,
                background,
                upgrade,
            )
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            _EXCHANGE.reset(token)
        head_at = time.time_ns()
        tracer.start_span("upstream head", inside, start_time=started).end(head_at)
        span.set_attribute("http.response.status_code", up.status)
        if up.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        give_back = up.give_back

        def released() -> None:
            done = time.time_ns()
            tracer.start_span("upstream body", inside, start_time=head_at).end(done)
            span.end(done)
            if give_back is not None:
                give_back()

        up.give_back = released
        return up
