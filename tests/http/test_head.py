"""The fast path's own head parse (proxy/http/head.py) against aiohttp's request parser: every
head it accepts, aiohttp reads the same way, field for field; what it must refuse, it does."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import hdrs
from aiohttp.http_parser import HttpRequestParser
from aiohttp.streams import EMPTY_PAYLOAD
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from proxy.http import head
from proxy.http.head import MAX_FIELDS, MAX_HEAD, Head, parse_head
from proxy.server.listener import HEAD_LIMITS, MAX_REQUEST_LINE


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def aiohttp_reads(loop: asyncio.AbstractEventLoop, data: bytes) -> Any:
    """aiohttp's one message for `data`, as the proxy port's parser reads it; None: it refuses
    it, or reads something other than one bodiless request ending where `data` ends."""
    parser = HttpRequestParser(object(), loop, 2**16, **HEAD_LIMITS)  # type: ignore[arg-type]
    try:
        messages, upgraded, tail = parser.feed_data(data)
    except Exception:
        return None
    if len(messages) != 1 or upgraded or tail:
        return None
    message, payload = messages[0]
    return message if payload is EMPTY_PAYLOAD else None


def same(head: Head, message: Any) -> None:
    assert head.method == message.method
    assert head.path == message.path
    assert head.version == message.version
    assert head.should_close == message.should_close
    assert head.upgrade == message.upgrade
    # Names as aiohttp spells them, values, order and repeats alike.
    assert list(head.headers.items()) == list(message.headers.items())
    assert [type(name) for name in head.headers] == [type(name) for name in message.headers]


def test_the_limits_are_within_the_listeners() -> None:
    assert HEAD_LIMITS["max_field_size"] >= MAX_HEAD and MAX_HEAD <= MAX_REQUEST_LINE
    assert HEAD_LIMITS["max_headers"] >= MAX_FIELDS


def test_a_plain_head_is_read_as_aiohttp_reads_it(loop: asyncio.AbstractEventLoop) -> None:
    data = (
        b"GET /api/item/1?x=1&y=%20 HTTP/1.1\r\nHost: bench\r\nOrigin: https://a.example\r\n"
        b"accept-encoding:br, gzip  \r\nX-Thing: \t a\tb \r\nX-Thing: 2\r\nEmpty:\r\n"
        b"Connection: Keep-Alive\r\n\r\n"
    )
    head = parse_head(data)
    assert head is not None
    same(head, aiohttp_reads(loop, data))
    assert head.headers["ACCEPT-ENCODING"] == "br, gzip"
    assert head.headers.getall("x-thing") == ["a\tb", "2"]
    assert parse_head(data.replace(b"GET", b"HEAD")) is not None


@pytest.mark.parametrize(
    "data",
    [
        b"GET /a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\ncontent-length: 5\r\n\r\nhello",
        b"GET /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, close\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n",  # obs-fold
        b"GET /a HTTP/1.1\r\nHost: t\nX: a\r\n\r\n",  # bare LF
        b"GET /a HTTP/1.1\r\nHost: t\rX: a\r\n\r\n",  # bare CR
        b"GET /a HTTP/1.1\nHost: t\n\n",
        b"GET /a HTTP/1.1\r\nHo st: t\r\n\r\n",  # not a token
        b"GET /a HTTP/1.1\r\nHost : t\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n",  # CTLs
        b"GET /a HTTP/1.1\r\nHost: t\r\nX: a\x7fb\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nX: caf\xc3\xa9\r\n\r\n",  # not ASCII
        b"GET /a HTTP/1.0\r\nHost: t\r\n\r\n",
        b"GET /a HTTP/1.1 \r\nHost: t\r\n\r\n",
        b"GET /a HTTP/2.0\r\nHost: t\r\n\r\n",
        b"GET  /a HTTP/1.1\r\nHost: t\r\n\r\n",
        b"get /a HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET http://t/a HTTP/1.1\r\nHost: t\r\n\r\n",  # absolute-form
        b"GET * HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /a#f HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /a HTTP/1.1\r\n\r\n",  # no Host
        b"GET /a HTTP/1.1\r\nHost: t\r\nhost: u\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /a HTTP/1.1\r\nHost: t\r\n\r\n",  # two
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n\r\n",  # bytes after the head
        b"GET /a HTTP/1.1\r\nHost: t\r\n",  # not whole
        b"\r\nGET /a HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\n" + b"X: a\r\n" * MAX_FIELDS + b"\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nSec-WebSocket-Key1: a\r\n\r\n",
    ],
)
def test_refuses_what_could_read_otherwise(data: bytes) -> None:
    assert parse_head(data) is None


def test_a_long_run_of_spaces_is_refused_in_linear_time() -> None:
    # A backtracking parse would take seconds here (hypothesis's deadline catches slowness).
    data = b"GET /a HTTP/1.1\r\nHost: t\r\nX: a" + b" " * 8000 + b"\x01\r\n\r\n"
    assert parse_head(data) is None
    data = b"GET /a HTTP/1.1\r\nHost: t\r\nX: a" + b" " * 7000 + b"b\r\n\r\n"
    head = parse_head(data)
    assert head is not None and head.headers["X"] == "a" + " " * 7000 + "b"


TOKEN = st.text(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=12,
)
KNOWN_NAME = st.sampled_from(
    [
        hdrs.HOST,
        hdrs.ACCEPT,
        hdrs.ORIGIN,
        hdrs.RANGE,
        hdrs.USER_AGENT,
        hdrs.CONNECTION,
        hdrs.CONTENT_LENGTH,
        hdrs.EXPECT,
        hdrs.UPGRADE,
        hdrs.AUTHORIZATION,
        hdrs.ETAG,
    ]
).flatmap(lambda n: st.sampled_from([str(n), str(n).lower(), str(n).upper()]))
# Mostly what a field holds, sometimes what it must not.
VALUE = st.lists(
    st.sampled_from(
        list("ab ,;=\t-/") * 4
        + ["keep-alive"] * 4
        + ["keep-alive", "close", "\r", "\n", "\x00", "\x7f", "é"]
    ),
    max_size=6,
).map("".join)
FIELD = st.tuples(st.one_of(TOKEN, TOKEN, KNOWN_NAME, st.sampled_from(["X y", "", "é"])), VALUE)
TARGET = st.text(st.sampled_from([*list("/a%2F?=&~.#*: "), "é", "\x00"]), min_size=0, max_size=10)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "HEAD"] * 3 + ["POST", "get"]),
    target=st.one_of(TARGET, TARGET.map(lambda t: "/" + t)),
    version=st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/1.1 ", "HTTP/2.0"]),
    host=st.sampled_from([True] * 6 + [False]),
    fields=st.lists(FIELD, max_size=6),
    end=st.sampled_from([""] * 6 + ["\r\n", "\r\n\r\n", "GET /a HTTP/1.1\r\nHost: t\r\n\r\n"]),
)
@example(method="GET", target="/", version="HTTP/1.1", host=True, fields=[], end="")
def test_whatever_it_accepts_aiohttp_reads_the_same_way(
    loop: asyncio.AbstractEventLoop,
    method: str,
    target: str,
    version: str,
    host: bool,
    fields: list[tuple[str, str]],
    end: str,
) -> None:
    lines = [f"{method} {target} {version}"] + (["Host: h"] if host else [])
    lines += [f"{name}:{value}" for name, value in fields]
    data = ("\r\n".join(lines) + "\r\n\r\n" + end).encode("utf-8", "surrogateescape")
    head = parse_head(data)
    event("accepted" if head is not None else "refused")
    if head is None:
        return
    message = aiohttp_reads(loop, data)
    assert message is not None, data
    same(head, message)


SAFE_NAME = st.sampled_from(
    [hdrs.ACCEPT, hdrs.ORIGIN, hdrs.RANGE, hdrs.USER_AGENT, hdrs.AUTHORIZATION, hdrs.ETAG]
).flatmap(lambda n: st.sampled_from([str(n), str(n).lower(), str(n).upper()]))
PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126) | st.just("\t"), max_size=12)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "HEAD"]),
    target=st.text("/abcAZ09-._~%!$&'()*+,;=:@?", max_size=16).map(lambda t: "/" + t),
    fields=st.lists(st.tuples(st.one_of(TOKEN, SAFE_NAME), PRINTABLE), max_size=8),
    connection=st.sampled_from(["", "Connection: keep-alive\r\n", "connection:KEEP-ALIVE \r\n"]),
)
def test_heads_of_every_field_it_accepts_are_read_as_aiohttp_reads_them(
    loop: asyncio.AbstractEventLoop,
    method: str,
    target: str,
    fields: list[tuple[str, str]],
    connection: str,
) -> None:
    head_lines = "".join(f"{name}:{value}\r\n" for name, value in fields)
    data = f"{method} {target} HTTP/1.1\r\nHost: h\r\n{connection}{head_lines}\r\n".encode()
    head = parse_head(data)
    event("accepted" if head is not None else "refused")
    if head is None:  # a second Host, User-Agent, ETag; a Connection field not keep-alive
        return
    message = aiohttp_reads(loop, data)
    assert message is not None, data
    same(head, message)


def test_a_block_of_fields_is_read_once_and_its_read_only_view_reused() -> None:
    first = parse_head(b"GET /a HTTP/1.1\r\nHost: t\r\nX-N: 1\r\n\r\n")
    again = parse_head(b"HEAD /b HTTP/1.1\r\nHost: t\r\nX-N: 1\r\n\r\n")
    other = parse_head(b"GET /a HTTP/1.1\r\nHost: t\r\nX-N: 2\r\n\r\n")
    assert first is not None and again is not None and other is not None
    assert again.headers is first.headers and (again.method, again.path) == ("HEAD", "/b")
    assert other.headers["X-N"] == "2" and first.headers["X-N"] == "1"
    with pytest.raises(TypeError):
        first.headers["X-N"] = "3"  # type: ignore[index]  # a proxy: no stage can change it
    refused = b"GET /a HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\r\n"
    assert parse_head(refused) is None and parse_head(refused) is None


def test_the_blocks_remembered_are_bounded() -> None:
    for i in range(3 * head._BLOCKS_MAX):
        parse_head(b"GET /a HTTP/1.1\r\nHost: t\r\nX-N: %d\r\n\r\n" % i)
        assert len(head._BLOCKS) <= head._BLOCKS_MAX
