"""request_head: the request line, fields and framing as bytes, and its last defence."""

from __future__ import annotations

import pytest

from proxy.upstream.http1 import request_head


def test_the_head_is_the_request_line_the_fields_and_the_framing() -> None:
    head, chunked = request_head("POST", "/a?b=1", ["Host: h", "X-A: 1"], b"xyz")
    assert head == b"POST /a?b=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 3\r\n\r\n"
    assert not chunked
    assert request_head("GET", "/", [], None) == (b"GET / HTTP/1.1\r\n\r\n", False)


@pytest.mark.parametrize("bad", ["\r", "\n", "\r\n", "\r\nX-Evil: 1"])
@pytest.mark.parametrize("where", ["field", "first field", "target", "method"])
def test_a_cr_or_lf_anywhere_refuses_the_head(bad: str, where: str) -> None:
    method, target, fields = "GET", "/a", ["Host: h", "X-A: 1"]
    if where == "field":
        fields[1] += bad
    elif where == "first field":
        fields[0] = f"Host: {bad}h"
    elif where == "target":
        target += bad
    else:
        method += bad
    with pytest.raises(ValueError, match="CR or LF"):
        request_head(method, target, fields, None)
