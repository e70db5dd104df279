"""Body.whole: a complete body without awaiting, and never part of one."""

from __future__ import annotations

from proxy.upstream.http1 import Body, BodyError


def test_whole_is_none_until_the_body_has_ended() -> None:
    body = Body(None)
    body._eof = False  # as for a connection's body still arriving
    body.feed(b"ab")
    assert body.whole() is None
    body.feed(b"cd")
    body.end()
    assert body.whole() == b"abcd"


def test_whole_of_a_body_that_failed_part_way_is_none() -> None:
    body = Body(None)
    body._eof = False
    body.feed(b"ab")
    body.fail(BodyError("cut short"))
    assert body.whole() is None


def test_whole_of_an_empty_body_is_empty() -> None:
    assert Body(None).whole() == b""


async def test_read_after_whole_finds_nothing_more() -> None:
    body = Body(None)
    body._eof = False
    body.feed(b"xyz")
    body.end()
    assert body.whole() == b"xyz"
    assert await body.read() == b""
