"""The contract with aiohttp's internals (proxy/adapters/aiohttp_internals.py), on the installed
aiohttp: every private field the proxy port reads exists, is the storage aiohttp itself uses,
and a release without one fails loudly, naming it. The behaviour built on them (head, body and
keep-alive timers, 414/431/505 responses, prepared hits) is checked through a running proxy in
tests/e2e/test_listener.py and tests/e2e/test_prepared.py.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import HttpVersion11
from aiohttp.http_parser import HttpRequestParser
from aiohttp.web_protocol import MAX_MSG_QUEUE_SIZE

from proxy.adapters import aiohttp_internals
from proxy.adapters.aiohttp_internals import (
    Connection,
    LibraryChanged,
    ParsedRequest,
    with_version,
)
from proxy.observe.metrics import ROUTE
from proxy.respond.prepared import PreparedResponse
from tests.conftest import StartUpstream

# Connection's public name -> the private slot it is, as listed in the adapter's docstring.
SLOTS = {
    "loop": "_loop",
    "reading_paused": "_reading_paused",
    "writing_paused": "_paused",
    "buffer_paused": "_buffer_paused",
    "idle_waiter": "_waiter",
    "heads_parsed": "_request_count",
    "keepalive_close_at": "_next_keepalive_close_time",
    "handler_task": "_task_handler",
    "current_request": "_current_request",
    "upgrading": "_upgraded",
    "parser": "_parser",
    "queued": "_messages",
    "manager": "_manager",
    "keepalive_handle": "_keepalive_handle",
    "keepalive_timeout": "_keepalive_timeout",
    "closing": "_close",
}


def test_connection_names_every_slot_it_exposes_and_nothing_else() -> None:
    exposed = {
        name: value.__name__
        for name, value in vars(Connection).items()
        if isinstance(value, types.MemberDescriptorType)
    }
    assert exposed == {**SLOTS, "tunnel": "tunnel"}  # its one slot of its own


async def _never_called(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response()  # the connection below is never sent a request


@pytest.mark.parametrize(("public", "private"), SLOTS.items(), ids=SLOTS.values())
async def test_each_public_name_is_aiohttps_own_slot(public: str, private: str) -> None:
    server = web.Server(_never_called)
    conn = Connection(server, loop=asyncio.get_running_loop())
    marker = object()
    setattr(conn, public, marker)
    assert getattr(conn, private) is marker  # the one field RequestHandler reads and writes


def test_a_release_without_a_slot_fails_at_import_naming_it() -> None:
    # aiohttp 3.14.1-3.14.3 called the request queue's pause `_msg_queue_paused`: reading
    # `_buffer_paused` there raised in a timer callback and the body timeout silently stopped.
    class BaseProtocol3143:
        __slots__ = ("_loop", "_msg_queue_paused", "_paused", "_reading_paused")

    with pytest.raises(LibraryChanged, match=r"BaseProtocol3143 has no slot '_buffer_paused'"):
        aiohttp_internals._slot(BaseProtocol3143, "_buffer_paused")


def test_a_release_without_a_response_member_fails_at_import_naming_it() -> None:
    class Response:
        status = 200

    with pytest.raises(LibraryChanged, match=r"Response has no 'body_length'"):
        aiohttp_internals._member(Response, "body_length")


def test_every_member_prepared_response_overrides_is_still_streamresponses() -> None:
    for name in aiohttp_internals.RESPONSE_MEMBERS:
        assert hasattr(web.StreamResponse, name), name
        assert name in vars(PreparedResponse), name  # overridden: no private field read


class Recorder(AbstractAccessLogger):
    """aiohttp's access logging: records what it reads of each response."""

    seen: list[tuple[int, int, bool | None]] = []

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        Recorder.seen.append((response.status, response.body_length, response.keep_alive))


Serve = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """A low-level aiohttp server on loopback (the proxy port's kind) for `handler`."""
    runners: list[web.ServerRunner] = []

    async def start(handler: Any, **kwargs: Any) -> int:
        runner = web.ServerRunner(web.Server(handler, access_log_class=Recorder, **kwargs))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return runner.addresses[0][1]

    yield start
    for runner in runners:
        await runner.cleanup()


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            return await reader.read(-1)
    finally:
        writer.close()


async def test_aiohttps_handler_sends_a_prepared_response_through_its_public_members(
    serve: Serve,
) -> None:
    """What aiohttp's RequestHandler does with a response (prepare, write_eof, keep_alive)
    and what its access log reads (status, body_length) go through PreparedResponse's own
    fields: keep-alive holds for the next request, a forced close closes."""
    Recorder.seen = []
    closing = iter([False, True])

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        head = b" 203 Fine\r\nContent-Length: 5\r\n"
        resp = PreparedResponse(203, "Fine", head, "", b"hello", "hit")
        if next(closing):
            resp.force_close()
        return resp

    port = await serve(handler)
    two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    data = await exchange(port, two)
    first, second = data.split(b"hello")[:2]
    assert first.startswith(b"HTTP/1.1 203 Fine\r\n") and b"Connection: close" not in first
    assert second.startswith(b"HTTP/1.1 203 Fine\r\n") and b"Connection: close\r\n" in second
    assert data.endswith(b"hello")  # and then the server closed: read(-1) returned
    sizes = [len(first) + 5, len(second) + 5]
    assert Recorder.seen == [(203, sizes[0], True), (203, sizes[1], False)]


async def test_with_version_responds_in_http11_and_closes(serve: Serve) -> None:
    """The parser's own message type (C or Python) takes the version and the close."""

    def factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
        message = with_version(message, HttpVersion11)
        return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop())

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        version = request.version
        return web.Response(text=f"HTTP/{version.major}.{version.minor} {request.keep_alive}")

    port = await serve(handler, request_factory=factory)
    data = await exchange(port, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
    assert data.endswith(b"\r\n\r\nHTTP/1.1 False"), data  # and the server closed


def test_http_date_is_an_rfc_9110_date() -> None:
    date = aiohttp_internals.http_date()
    assert date.endswith(" GMT") and len(date) == 29, date


class Recording:
    """A TunnelEnd that records what the connection hands it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.paused: list[bool] = []
        self.ended: list[str] = []
        self.got = asyncio.Event()

    def received(self, data: bytes) -> None:
        self.data += data
        self.got.set()

    def writing(self, paused: bool) -> None:
        self.paused.append(paused)

    def end(self, reason: str) -> None:
        self.ended.append(reason)
        self.got.set()


class ConnectionServer(web.Server):
    """aiohttp's low-level server making Connections (as the proxy port's Listener does)."""

    def __call__(self) -> Connection:
        return Connection(self, loop=asyncio.get_running_loop())


async def serve_connections(handler: Any) -> tuple[web.ServerRunner, int]:
    runner = web.ServerRunner(ConnectionServer(handler))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


async def test_take_over_hands_every_byte_after_a_websocket_head_to_the_tunnel() -> None:
    """aiohttp holds the bytes after an `Upgrade: websocket` head (`upgrading`); take_over
    gets them first, then every later read, then the connection's loss; pause_reading and
    resume_reading then touch the transport only."""
    end = Recording()
    held: list[bool] = []

    async def wait_for(done: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not done():
                end.got.clear()
                await end.got.wait()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        conn = request.protocol
        assert isinstance(conn, Connection)
        held.append(conn.upgrading)
        resp = web.StreamResponse(status=101, headers={"Connection": "Upgrade"})
        await resp.prepare(request)
        conn.take_over(end)
        conn.pause_reading()
        conn.resume_reading()
        await wait_for(lambda: bool(end.ended))
        return resp

    runner, port = await serve_connections(handler)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        writer.write(head + b"held")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
        await wait_for(lambda: bytes(end.data) == b"held")
        writer.write(b" later")
        await wait_for(lambda: bytes(end.data) == b"held later")
        writer.close()
        await wait_for(lambda: bool(end.ended))
    finally:
        await runner.cleanup()
    assert held == [True] and end.ended == ["client"]


async def test_a_plain_request_is_not_upgrading_and_cannot_be_taken_over() -> None:
    refused: list[str] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        conn = request.protocol
        assert isinstance(conn, Connection) and not conn.upgrading
        try:
            conn.take_over(Recording())
        except RuntimeError as exc:
            refused.append(str(exc))
        return web.Response(text="plain")

    runner, port = await serve_connections(handler)
    try:
        data = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await runner.cleanup()
    assert data.endswith(b"plain") and refused and "parsed" in refused[0]


async def test_answer_first_takes_requests_before_aiohttp_queues_them_keeping_order() -> None:
    """Of pipelined requests, `answer` gets each parsed one first: those it takes aiohttp
    never queues (no request object, no handler), until one it leaves; that one and every
    one after it go to the handler, in order. `answered` counts them and arms the
    keep-alive timer as RequestHandler.start does; ParsedRequest reads the parsed head."""
    seen: list[tuple[str, str, str, bool, str | None, str | None]] = []
    conns: list[Connection] = []
    handled: list[str] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        handled.append(request.path)
        return web.Response(text=f"slow {request.path}")

    class Answering(ConnectionServer):
        def __call__(self) -> Connection:
            conn = super().__call__()
            conns.append(conn)

            def answer(message: Any, payload: Any) -> bool:
                if message.path != "/fast":
                    return False
                request = ParsedRequest(message, "192.0.2.1")
                request[ROUTE] = "r"
                seen.append(
                    (
                        request.method,
                        request.raw_path,
                        request.headers["Host"],
                        request.keep_alive,
                        request.remote,
                        request.get(ROUTE),
                    )
                )
                assert request.version == HttpVersion11
                assert repr(request) == "<ParsedRequest GET /fast>"  # for logs: no URL needed
                assert conn.transport is not None
                conn.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfast")
                conn.answered()
                return True

            conn.answer_first(answer)
            return conn

    server = Answering(handler)
    runner = web.ServerRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        get = "GET {} HTTP/1.1\r\nHost: x\r\n\r\n"
        three = "".join(get.format(path) for path in ("/fast", "/slow", "/fast"))
        reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
        writer.write(three.encode() + get.format("/fast").encode()[:10])  # and part of one
        bodies = []
        async with asyncio.timeout(5):
            for _ in range(3):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                bodies.append(await reader.readexactly(length))
        assert bodies == [b"fast", b"slow /slow", b"slow /fast"]
        (conn,) = conns
        assert conn.heads_parsed == 3 and server.requests_count == 3
        assert conn.keepalive_handle is not None  # armed by `answered` or by start()
        writer.write(get.format("/fast").encode()[10:])  # the rest: answered, the handler idle
        async with asyncio.timeout(5):
            assert (await reader.readuntil(b"fast")).endswith(b"\r\n\r\nfast")
        assert conn.heads_parsed == 4 and server.requests_count == 4
        writer.close()
    finally:
        await runner.cleanup()
    assert handled == ["/slow", "/fast"]
    assert seen == [("GET", "/fast", "x", True, "192.0.2.1", "r")] * 2


def test_parsed_request_overrides_only_members_baserequest_has() -> None:
    for name in aiohttp_internals.REQUEST_MEMBERS:
        assert hasattr(web.BaseRequest, name), name
        assert isinstance(vars(ParsedRequest)[name], types.MemberDescriptorType), name
    for name in aiohttp_internals.REQUEST_OTHERS:
        assert hasattr(web.BaseRequest, name) and name in vars(ParsedRequest), name


def test_what_a_parsed_request_is_given_to_write_is_what_baserequest_reads() -> None:
    """BaseRequest's transport, protocol, writer and content read these fields of its own
    (aiohttp 3.14.5's __init__ sets each); ParsedRequest.writing sets them."""
    source = inspect.getsource(web.BaseRequest)
    for name in aiohttp_internals.REQUEST_WRITING:
        assert f"self.{name} = " in source, name


def test_every_member_take_over_calls_is_aiohttps() -> None:
    for name in aiohttp_internals.TAKE_OVER_MEMBERS:
        assert hasattr(aiohttp_internals.RequestHandler, name), name


async def test_the_server_field_is_aiohttps_global_and_its_marker_is_dropped_before_writing(
    start_upstream: StartUpstream,
) -> None:
    """set_server_field sets what StreamResponse adds; with None, drop_server_marker (an
    on_response_prepare, run by the request's _prepare_hook between the headers being made
    and written) leaves no Server, but a handler's own."""
    before = aiohttp_internals.server_field()

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="x")

    async def own(request: web.Request) -> web.Response:
        return web.Response(text="x", headers={"Server": "mine"})

    app = web.Application()
    app.on_response_prepare.append(aiohttp_internals.drop_server_marker)
    app.router.add_get("/plain", plain)
    app.router.add_get("/own", own)
    url = (await start_upstream(app)).url
    try:
        async with aiohttp.ClientSession() as client:
            for value, expected in (("edge/1", ["edge/1"]), (None, [])):
                aiohttp_internals.set_server_field(value)
                assert aiohttp_internals.server_field() == value
                async with client.get(f"{url}/plain") as resp:
                    assert resp.headers.getall("Server", []) == expected
                async with client.get(f"{url}/own") as resp:
                    assert resp.headers.getall("Server", []) == ["mine"]
    finally:
        aiohttp_internals.set_server_field(before)
    assert issubclass(aiohttp_internals.NoServerFieldRequest, web.BaseRequest)


async def test_between_two_requests_the_factory_and_log_access_bracket_each_one() -> None:
    """What the listener's `_idle` reads (server/listener.py): RequestHandler.start calls the
    request factory before the handler's task runs, and log_access once the response is
    written whole, before it parks on a new waiter; close() sets `closing`, after which
    data_received parses nothing."""
    events: list[tuple[str, Any]] = []
    conns: list[Connection] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        events.append(("handler", request.path))
        return web.Response(text="ok")

    class Logged(Connection):
        def log_access(self, request: Any, response: Any, time: Any) -> None:
            assert self.transport is not None
            events.append(("logged", (request.path, response.keep_alive, self.idle_waiter)))

    class Server(web.Server):
        def __call__(self) -> Connection:
            conn = Logged(self, loop=asyncio.get_running_loop())
            conns.append(conn)
            return conn

    def factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
        events.append(("factory", message.path))
        return web.BaseRequest(message, payload, protocol, writer, task, protocol.loop)

    server = Server(handler, request_factory=factory)
    runner = web.ServerRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            await reader.readuntil(b"ok")
            (conn,) = conns
            while conn.idle_waiter is None:  # noqa: ASYNC110 (aiohttp's field: no event to wait on)
                await asyncio.sleep(0.01)
        assert events == [("factory", "/a"), ("handler", "/a"), ("logged", ("/a", True, None))]
        conn.close()
        assert conn.closing
        heads = conn.heads_parsed
        conn.data_received(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.heads_parsed == heads and not conn.queued
        writer.close()
    finally:
        await runner.cleanup()


def test_the_parser_skips_crlfs_between_requests_and_stops_at_32_in_flight() -> None:
    """What the listener's `_fresh` reads of aiohttp's C parser: a bodiless request emitted at
    its head's CRLFCRLF, CRLFs between requests skipped, the bytes past the 32nd request in
    flight kept back until message_consumed and another feed."""
    assert MAX_MSG_QUEUE_SIZE == 32
    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(
            object(),  # type: ignore[arg-type]  # a protocol the parser never calls
            loop,
            2**16,
            max_msg_queue_size=MAX_MSG_QUEUE_SIZE,
        )
        get = b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n"
        messages, _, _ = parser.feed_data(get % 0 + b"\r\n\r\n" + get % 1)
        assert [m.path for m, _ in messages] == ["/0", "/1"]
        for _ in messages:
            parser.message_consumed()
        messages, _, _ = parser.feed_data(b"".join(get % i for i in range(40)))
        assert len(messages) == 32
        for _ in messages:
            parser.message_consumed()
        messages, _, _ = parser.feed_data(b"")
        assert [m.path for m, _ in messages] == [f"/{i}" for i in range(32, 40)]
    finally:
        loop.close()


async def test_request_state_is_the_mapping_a_request_reads_and_writes(serve: Serve) -> None:
    """What `request_state` gives is what `request[KEY]` reads and writes, on aiohttp's own
    request and on a ParsedRequest alike (Pipeline.answer writes it, Observer.observe reads
    it)."""
    seen: list[tuple[Any, Any, bool]] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        state = aiohttp_internals.request_state(request)
        request[ROUTE] = "written"
        seen.append((state.get(ROUTE), None, isinstance(state, dict)))
        state[ROUTE] = "set"
        seen.append((request.get(ROUTE), request[ROUTE], True))
        return web.Response(text="ok")

    port = await serve(handler)
    assert (await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))[
        -2:
    ] == b"ok"
    assert seen == [("written", None, True), ("set", "set", True)]

    def parse(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
        parsed = ParsedRequest(message, "192.0.2.1")
        state = aiohttp_internals.request_state(parsed)
        parsed[ROUTE] = "parsed"
        assert state == {ROUTE: "parsed"} and parsed.get(ROUTE) == "parsed"
        state[ROUTE] = "again"
        assert parsed[ROUTE] == "again"
        seen.append(("parsed", None, True))
        return web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop())

    port = await serve(handler, request_factory=parse)
    await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert seen[2] == ("parsed", None, True)


async def test_a_listener_request_reads_what_aiohttps_own_request_reads(serve: Serve) -> None:
    """ListenerRequest's members, set once from the parsed head, are what BaseRequest's own
    properties return for the same head, with and without a body, in HTTP/1.1 and 1.0."""
    seen: list[str] = []

    def both(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
        loop = asyncio.get_running_loop()
        ours = aiohttp_internals.ListenerRequest(message, payload, protocol, writer, task, loop)
        theirs = web.BaseRequest(message, payload, protocol, writer, task, loop)
        for name in aiohttp_internals.ListenerRequest.__slots__:
            slot = vars(aiohttp_internals.ListenerRequest)[name]
            assert isinstance(slot, types.MemberDescriptorType), name  # read as a slot
            assert getattr(ours, name) == getattr(theirs, name), name
        seen.append(f"{ours.method} {ours.body_exists} {ours.keep_alive} {ours.version}")
        return ours

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        return web.Response(text="ok")

    port = await serve(handler, request_factory=both)
    await exchange(port, b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    post = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    await exchange(port, post)
    await exchange(port, b"HEAD / HTTP/1.0\r\nHost: x\r\n\r\n")
    assert seen == [
        "GET False False HttpVersion(major=1, minor=1)",
        "POST True False HttpVersion(major=1, minor=1)",
        "HEAD False False HttpVersion(major=1, minor=0)",
    ]
