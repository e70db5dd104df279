"""aiohttp's internals the proxy port relies on, each named once, with the versions that have it.

The proxy port is aiohttp's low-level server with a protocol of its own (server/listener.py):
its timers read a few of RequestHandler's private fields, as RequestHandler itself does.
They are bound here at import, each slot re-exposed on `Connection` under a public name as the
very same slot descriptor, so reading `conn.heads_parsed` costs what `conn._request_count` costs
and no call is added to the hit path. A release without one of them fails at import, naming
it, instead of a timeout silently doing nothing; tests/adapters/ checks each one and the
behaviour built on it. pyproject.toml pins aiohttp to the tested minor range.

RequestHandler / BaseProtocol slots (aiohttp 3.14.5 is the tested version; the rest read off
aiohttp's release tags):
  _loop, _reading_paused, _waiter, _request_count, _task_handler, _current_request
                          slots in every release from 3.10.0
  _next_keepalive_close_time   from 3.10.5 / 3.11.0
  _buffer_paused          reading held for a full request queue: absent up to 3.14.0, called
                          `_msg_queue_paused` in 3.14.1-3.14.3 and again on aiohttp's master
                          (4.0.0a2.dev0), `_buffer_paused` in 3.14.5
  _upgraded               the parser saw an Upgrade request and holds the bytes after its head
                          unparsed (every release from 3.10.0)
  _parser, _messages, _manager, _keepalive_handle, _keepalive_timeout
                          slots of 3.14.5 (older releases not read): the listener's fast path
                          (`answer_first`) puts itself between the parser and the request
                          queue, and `answered` does for a request answered there what
                          RequestHandler.start does after a response (the parser's
                          message_consumed, Server.requests_count, the keep-alive timer and
                          its callback _process_keepalive, which Connection overrides so
                          that a connection `busy` with a request of its own is not closed
                          as idle)
  _close                  set by close(): no request parsed from here on (data_received
                          drops every byte), the connection closed once the handler is done
                          (every release from 3.10.0)
RequestHandler.start, between two requests (3.14.5): after a response it leaves `_waiter`
None while it finishes that request (keep-alive, lingering over an unread body) and until
it parks on a new `_waiter`; the next request's bytes may arrive meanwhile. It calls the
request factory for each request it takes from `_messages` (_ErrInfo ones too) before it
creates the handler's task, and finish_response calls log_access once the response is
written whole (write_eof awaited), ConnectionError or not; a handler or a response that
raises anything else ends the connection (force_close) without log_access. So "each
request handed to the factory has reached log_access, kept alive, and nothing is queued"
is a connection with nothing in flight (tests/adapters check it).
aiohttp's C parser (_http_parser.pyx, 3.14.5) keeps a head's bytes until the head is
complete, emits a bodiless request at its head's CRLFCRLF and skips CRLFs between requests;
it stops emitting (keeping the rest of the bytes) once 32 requests are in flight
(web_protocol's MAX_MSG_QUEUE_SIZE), each until message_consumed.
RequestHandler methods, public by name but undocumented, that WebSocketResponse itself uses to
take a connection over after its 101: set_parser (feeds the held bytes, then every later
read, to a parser's feed_data; its feed_eof when the connection is lost), keep_alive(False);
and BaseProtocol's pause_reading / resume_reading(resume_parser), which leave the parser alone
once upgraded (`take_over`, below).
Also: helpers.rfc822_formatted_time (not exported), RawRequestMessage._replace (the C
parser's message mimics the NamedTuple's), LineTooLong.args = (line, limit, actual), and the
parser's words for too many header fields.

ParsedRequest, the request of a head the listener read (the fast path's, the own task's), is
a BaseRequest built without its __init__: its head's members in slots, its mapping in
BaseRequest's own `_state` (every release from 3.0); `writing` sets the three fields
BaseRequest's `protocol`, `transport`, `writer` and `content` read (`_protocol`,
`_payload_writer`, `_payload`: 3.14.5's __init__ sets each, tests/adapters checks it).

PreparedResponse (respond/prepared.py) reads no private field: it overrides the public
members of StreamResponse that aiohttp's RequestHandler calls, checked below to exist.

The Server field (listen.server_header): StreamResponse adds `Server: <SERVER_SOFTWARE>` to
every response without one (web_response's module global, read at each prepare, every
release from 3.0); `set_server_field` sets that global. For no Server field at all it is set
to a marker string of ours, which a request's `_prepare_hook` (awaited by StreamResponse._start
between making the headers and writing them, every release from 3.0) takes out again:
NoServerFieldRequest on the proxy port, an on_response_prepare signal on the admin
Applications (`drop_server_marker`). An upstream's own Server value is never that object.
"""

from __future__ import annotations

import operator
import types
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
from aiohttp import hdrs, web, web_response
from aiohttp.base_protocol import BaseProtocol
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import HttpVersion, StreamWriter
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, EmptyStreamReader
from aiohttp.web_protocol import MAX_MSG_QUEUE_SIZE, RequestHandler
from yarl import URL

# Every failure below ends with this: where the tested versions are written.
PINNED = "cacheproxy is tested with the aiohttp range pinned in its pyproject.toml"


class LibraryChanged(ImportError):
    """The installed library lacks an internal the proxy relies on."""


def _slot(owner: type, name: str) -> types.MemberDescriptorType:
    """`owner`'s slot `name` (found along its MRO) as its descriptor, or a loud failure."""
    for cls in owner.__mro__:
        found = cls.__dict__.get(name)
        if isinstance(found, types.MemberDescriptorType):
            return found
    raise LibraryChanged(
        f"aiohttp {aiohttp.__version__}: {owner.__name__} has no slot {name!r}, which "
        f"cacheproxy reads (proxy/adapters/aiohttp_internals.py); {PINNED}"
    )


def _member(owner: type, name: str, where: str = "proxy/respond/prepared.py") -> None:
    if not hasattr(owner, name):
        raise LibraryChanged(
            f"aiohttp {aiohttp.__version__}: {owner.__name__} has no {name!r}, which cacheproxy "
            f"overrides ({where}); {PINNED}"
        )


# What aiohttp's RequestHandler and access logging use of a response; PreparedResponse
# overrides them, so a rename would leave its override unread.
RESPONSE_MEMBERS: tuple[str, ...] = ("prepare", "write_eof", "keep_alive", "force_close")
RESPONSE_MEMBERS += ("status", "reason", "body_length", "prepared", "headers")


# Requests aiohttp's parser emits before it stops (keeping the bytes after them) until the
# handler takes some: it is this many in flight (the docstring says more).
PARSER_IN_FLIGHT: int = MAX_MSG_QUEUE_SIZE

# What ParsedRequest overrides of BaseRequest.
REQUEST_MEMBERS = ("headers", "keep_alive", "method", "raw_path", "remote", "scheme", "version")
# ... in slots; these others, and what `writing` sets (read by BaseRequest's own members).
REQUEST_OTHERS = ("body_exists", "content_length", "path", "_prepare_hook")
REQUEST_WRITING = ("_payload", "_payload_writer", "_protocol")


class TunnelEnd(Protocol):
    """The client's side of a connection taken over after a 101 (`Connection.take_over`)."""

    def received(self, data: bytes) -> None:
        """Bytes from the client."""

    def writing(self, paused: bool) -> None:
        """The client's transport stopped taking writes (its buffer is full), or took them again."""

    def end(self, reason: str) -> None:
        """`client`: the client's connection is lost; `shutdown`: the shutdown grace is over."""


class _Feed:
    """What set_parser wants (WebSocketReader's two methods), feeding a TunnelEnd."""

    __slots__ = ("_end",)

    def __init__(self, end: TunnelEnd) -> None:
        self._end = end

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._end.received(data)
        return False, b""  # never at an end, nothing left over: every byte is the tunnel's

    def feed_eof(self) -> None:
        self._end.end("client")


class _Answering:
    """The request parser with `answer` between it and aiohttp's queue: each parsed request
    `answer` takes (True) is dropped, in order, until one it does not; those after it are
    aiohttp's too. Anything else is the parser's own."""

    __slots__ = ("_answer", "_parser")

    def __init__(self, parser: Any, answer: Callable[[Any, Any], bool]) -> None:
        self._parser = parser
        self._answer = answer

    def feed_data(self, data: bytes) -> tuple[Any, bool, bytes]:
        parser, answer = self._parser, self._answer
        while True:
            messages, upgraded, tail = parser.feed_data(data)
            if not messages:
                return messages, upgraded, tail
            for taken, (message, payload) in enumerate(messages):
                if not answer(message, payload):
                    return messages[taken:], upgraded, tail
            # Every one answered. The parser stops emitting at 32 requests in flight and
            # keeps the bytes after them; aiohttp would parse those again as its handler
            # drains its queue, but none of these reached the queue: parse them here, or a
            # client that pipelined more than 32 waits for bytes it has already sent.
            data = b""

    def message_consumed(self) -> None:  # once per request: not through __getattr__
        self._parser.message_consumed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class Connection(RequestHandler):
    """aiohttp's RequestHandler with the private fields the listener reads given public names.

    Each is aiohttp's own slot descriptor: the same storage, read and written at the same cost.
    `tunnel`: set by `take_over` once the connection has switched protocols.
    """

    __slots__ = ("tunnel",)

    loop: Any = _slot(BaseProtocol, "_loop")
    reading_paused: Any = _slot(BaseProtocol, "_reading_paused")  # flow control stopped reading
    # The client is not reading (flow control): aiohttp's property over it, without the call.
    writing_paused: Any = _slot(BaseProtocol, "_paused")
    buffer_paused: Any = _slot(BaseProtocol, "_buffer_paused")  # the request queue is full
    idle_waiter: Any = _slot(RequestHandler, "_waiter")  # set while waiting for a request
    heads_parsed: Any = _slot(RequestHandler, "_request_count")  # request heads parsed so far
    keepalive_close_at: Any = _slot(RequestHandler, "_next_keepalive_close_time")
    handler_task: Any = _slot(RequestHandler, "_task_handler")
    current_request: Any = _slot(RequestHandler, "_current_request")
    upgrading: Any = _slot(BaseProtocol, "_upgraded")  # bytes after the head held unparsed
    parser: Any = _slot(BaseProtocol, "_parser")  # the request parser (aiohttp's HttpRequestParser)
    queued: Any = _slot(RequestHandler, "_messages")  # parsed requests the handler has not taken
    manager: Any = _slot(RequestHandler, "_manager")  # the web.Server
    keepalive_handle: Any = _slot(RequestHandler, "_keepalive_handle")
    keepalive_timeout: Any = _slot(RequestHandler, "_keepalive_timeout")
    closing: Any = _slot(RequestHandler, "_close")  # close() called: no request parsed now

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tunnel: TunnelEnd | None = None

    def answer_first(self, answer: Callable[[Any, Any], bool]) -> None:
        """Offer every parsed request (message, payload), in order, to `answer` before
        aiohttp queues it for its handler: one it answers (True) aiohttp never sees, and
        `answered` must be called for it. The message is aiohttp's RawRequestMessage."""
        self.parser = _Answering(self.parser, answer)

    def answered(self, parsed: bool = True) -> None:
        """A request `answer` took has been answered in full: counted, its parser slot freed
        and the keep-alive timer run, as RequestHandler.start does after each response.
        `parsed` False: its head was never fed to the parser (the listener read it), so no
        slot of the parser's is freed."""
        self.heads_parsed += 1
        self.manager.requests_count += 1
        if parsed:
            self.parser.message_consumed()
        loop = self.loop
        close_at = self.keepalive_close_at = loop.time() + self.keepalive_timeout
        if self.keepalive_handle is None:
            self.keepalive_handle = loop.call_at(close_at, self._process_keepalive)

    def busy(self) -> bool:
        """A request aiohttp's handler does not know of is in flight (a subclass's own)."""
        return False

    def _process_keepalive(self) -> None:
        # aiohttp's keep-alive timer closes a connection whose handler waits for a request;
        # a busy one is not idle: asked again a keep-alive from now. (Not cancelled per
        # request, as a timer made again for each would cost more.)
        if self.busy():
            loop = self.loop
            at = loop.time() + self.keepalive_timeout
            self.keepalive_handle = loop.call_at(at, self._process_keepalive)
            return
        super()._process_keepalive()

    def take_over(self, end: TunnelEnd) -> None:
        """After a 101 has been written: every byte from the client, those that came after
        the request head first, goes to `end`, as aiohttp's WebSocketResponse takes it.
        aiohttp must have held those bytes (`upgrading`), or it has parsed them as HTTP."""
        if not self.upgrading:
            raise RuntimeError("aiohttp parsed the bytes after this request's head as HTTP")
        self.keep_alive(False)
        self.tunnel = end
        self.set_parser(_Feed(end))  # type: ignore[arg-type]  # WebSocketReader's two methods
        if self.writing_paused:
            end.writing(True)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.tunnel is not None:
            self.tunnel.writing(True)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.tunnel is not None:
            self.tunnel.writing(False)


class ParsedRequest(web.BaseRequest):
    """A request made of its parsed head and its connection, as the stages of a request
    aiohttp never made one of read it (pipeline/handler.py `answer`, and `handle` on the
    listener's own task): its method, target, fields, version, keep-alive, peer, scheme and
    its mapping (route, request id). Built without BaseRequest.__init__ (no URL, no task):
    nothing else of it may be read, but `path`, and what `writing` gives it."""

    __slots__ = ("headers", "keep_alive", "method", "raw_path", "remote", "scheme", "version")

    # What a request without a body says of it.
    body_exists = False
    content_length = None

    def __init__(self, message: Any, remote: str | None, scheme: str = "http") -> None:
        # Slots of this class, in place of the base's properties over its private fields.
        self.method = message.method
        self.raw_path = message.path
        self.headers = message.headers
        self.version = message.version
        self.keep_alive = not message.should_close
        self.remote = remote
        self.scheme = scheme
        self._state = {}  # BaseRequest's mapping (request[KEY]) reads and writes it

    def __repr__(self) -> str:  # BaseRequest's reads its URL, which this has none of
        return f"<ParsedRequest {self.method} {self.raw_path}>"

    @property
    def path(self) -> str:  # BaseRequest's reads its URL
        return URL.build(path=self.raw_path.partition("?")[0], encoded=True).path

    def writing(self, protocol: RequestHandler) -> None:
        """Made able to send any response over `protocol`, its connection, as aiohttp's
        request is: its `transport`, `protocol` and `writer` (a StreamWriter, as aiohttp's
        RequestHandler makes per request), and an empty body."""
        self._protocol = protocol
        self._payload_writer = StreamWriter(protocol, protocol._loop)
        self._payload = EMPTY_PAYLOAD

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        _drop_marker(response)  # as NoServerFieldRequest's: a response of the proxy port's

    def again(self, remote: str | None) -> ParsedRequest:
        """The same request head from `remote`, with a mapping of its own: a client sending
        bytes sent before (Pipeline.again) is read from the first such request."""
        request = ParsedRequest.__new__(ParsedRequest)
        request.method = self.method
        request.raw_path = self.raw_path
        request.headers = self.headers
        request.version = self.version
        request.keep_alive = self.keep_alive
        request.remote = remote
        request.scheme = self.scheme
        request._state = {}
        return request


for _name in REQUEST_MEMBERS + REQUEST_OTHERS:
    _member(web.BaseRequest, _name, "proxy/adapters/aiohttp_internals.py")
for _name in RESPONSE_MEMBERS:
    _member(web.StreamResponse, _name)
# What Connection.take_over and a tunnel's flow control call of aiohttp's protocol, and
# the keep-alive timer's callback `answered` arms as RequestHandler.start does.
TAKE_OVER_MEMBERS: tuple[str, ...] = ("set_parser", "keep_alive", "pause_reading")
TAKE_OVER_MEMBERS += ("resume_reading", "writing_paused", "_process_keepalive")
for _name in TAKE_OVER_MEMBERS:
    if not hasattr(RequestHandler, _name):
        raise LibraryChanged(
            f"aiohttp {aiohttp.__version__}: RequestHandler has no {_name!r}, which cacheproxy "
            f"calls to join a switched connection (proxy/adapters/aiohttp_internals.py); {PINNED}"
        )

if not isinstance(getattr(web_response, "SERVER_SOFTWARE", None), str):
    raise LibraryChanged(
        f"aiohttp {aiohttp.__version__}: web_response has no SERVER_SOFTWARE, which cacheproxy "
        f"sets for listen.server_header (proxy/adapters/aiohttp_internals.py); {PINNED}"
    )
if not hasattr(web.BaseRequest, "_prepare_hook"):
    raise LibraryChanged(
        f"aiohttp {aiohttp.__version__}: BaseRequest has no '_prepare_hook', which cacheproxy "
        f"overrides for `listen.server_header: false` (proxy/adapters/aiohttp_internals.py); "
        f"{PINNED}"
    )

# A string object of our own, never equal by identity to a value from a parser or a config.
_NO_SERVER = "".join(("cacheproxy", " (no Server field)"))


def set_server_field(value: str | None) -> None:
    """What aiohttp's responses carry as Server when they have none, process-wide; None:
    nothing (given NoServerFieldRequest and drop_server_marker where responses are made)."""
    web_response.SERVER_SOFTWARE = _NO_SERVER if value is None else value


def server_field() -> str | None:
    """The Server value aiohttp's responses get when they have none (None: no field)."""
    value: str = web_response.SERVER_SOFTWARE
    return None if value is _NO_SERVER else value


def _drop_marker(response: web.StreamResponse) -> None:
    headers = response.headers
    if headers.get(hdrs.SERVER) is _NO_SERVER:
        del headers[hdrs.SERVER]


class ListenerRequest(web.BaseRequest):
    """The proxy port's request: aiohttp's, with the members every stage reads set once from
    the parsed head into slots. BaseRequest computes each on first read (a Python call) and
    looks it up in a dict on every later one; these are plain reads (~15k instructions a
    miss). The same values: each is what BaseRequest's own property returns (from 3.0 on)."""

    __slots__ = ("body_exists", "headers", "keep_alive", "method", "raw_path", "version")

    def __init__(self, message: Any, payload: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(message, payload, *args, **kwargs)
        # Slots of this class, in place of the base's properties.
        self.method = message.method
        self.raw_path = message.path
        self.headers = message.headers
        self.version = message.version
        self.keep_alive = not message.should_close
        self.body_exists = type(payload) is not EmptyStreamReader


class NoServerFieldRequest(ListenerRequest):
    """The proxy port's request when responses get no Server field of ours."""

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        _drop_marker(response)


async def drop_server_marker(request: web.Request, response: web.StreamResponse) -> None:
    """An Application's on_response_prepare: no Server field where set_server_field(None)."""
    _drop_marker(response)


# A request's mapping (`request[KEY]`) as the dict BaseRequest keeps it in: its
# __getitem__/__setitem__, and Mapping.get over them, are Python calls (~1.8k instructions
# each on a hit); the dict's own are not. Hot paths only (Pipeline.answer, Observer.observe).
request_state: Callable[[web.BaseRequest], dict[Any, Any]] = operator.attrgetter("_state")

# The Date value aiohttp's own responses carry (its clock, formatted once per second).
http_date = rfc822_formatted_time

# What the parser says, in words only, when a head has more fields than max_headers.
TOO_MANY_FIELDS = "Too many headers received"


def exceeded_limit(exc: HttpProcessingError) -> int | None:
    """The byte limit a LineTooLong went past (max_line_size or max_field_size)."""
    if not isinstance(exc, LineTooLong):
        return None
    limit = exc.args[1] if len(exc.args) > 1 else None
    return limit if isinstance(limit, int) else None


def with_version(message: Any, version: HttpVersion) -> Any:
    """The parsed request `message` in another HTTP version, its connection to be closed."""
    return message._replace(version=version, should_close=True)
