"""Validators, conditional requests and 304s (RFC 9111 §4.3): pure."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache.policy.validation import (
    conditional_headers,
    merge_304_headers,
    not_modified_for_client,
)
from tests.cache.policy.samples import NEAR_MISS_DATE, NOW, h, http_date


def test_conditional_headers_from_validators() -> None:
    lm = http_date(NOW - 60)
    stored = h(("ETag", ' W/"v1" '), ("Last-Modified", lm), ("Content-Type", "text/plain"))
    assert conditional_headers(stored) == {"If-None-Match": 'W/"v1"', "If-Modified-Since": lm}
    assert conditional_headers(h(("ETag", '"x"'))) == {"If-None-Match": '"x"'}
    assert conditional_headers(h(("Date", lm))) == {}
    # An invalid Last-Modified is ignored: it would ask the origin a question it can't read.
    assert conditional_headers(h(("Last-Modified", NEAR_MISS_DATE))) == {}
    assert conditional_headers(h(("Last-Modified", "0"), ("ETag", '"x"'))) == {
        "If-None-Match": '"x"'
    }


STORED_ETAG = h(("ETag", '"abc"'), ("Last-Modified", http_date(NOW - 100)))
STORED_WEAK = h(("ETag", 'W/"abc"'))
CONDITIONALS = [
    # id, request headers, stored headers, 304?
    ("inm-strong-match", [("If-None-Match", '"abc"')], STORED_ETAG, True),
    ("inm-weak-request", [("If-None-Match", 'W/"abc"')], STORED_ETAG, True),
    ("inm-weak-stored", [("If-None-Match", '"abc"')], STORED_WEAK, True),
    ("inm-list", [("If-None-Match", '"x", W/"y" ,"abc"')], STORED_ETAG, True),
    ("inm-lines", [("If-None-Match", '"x"'), ("If-None-Match", '"abc"')], STORED_ETAG, True),
    ("inm-comma-inside-tag", [("If-None-Match", '"a,bc", "zz"')], STORED_ETAG, False),
    ("inm-comma-tag-match", [("If-None-Match", '"q", "a,b"')], h(("ETag", '"a,b"')), True),
    ("inm-mismatch", [("If-None-Match", '"abd"')], STORED_ETAG, False),
    ("inm-star", [("If-None-Match", "*")], h(), True),
    ("inm-no-stored-etag", [("If-None-Match", '"abc"')], h(), False),
    ("inm-unquoted-no-match", [("If-None-Match", "abc")], STORED_ETAG, False),
    ("inm-beats-ims", [("If-None-Match", '"nope"'), ("If-Modified-Since", http_date(NOW))],
     STORED_ETAG, False),
    ("ims-newer", [("If-Modified-Since", http_date(NOW))], STORED_ETAG, True),
    ("ims-equal", [("If-Modified-Since", http_date(NOW - 100))], STORED_ETAG, True),
    ("ims-older", [("If-Modified-Since", http_date(NOW - 200))], STORED_ETAG, False),
    ("ims-garbage", [("If-Modified-Since", "yesterday")], STORED_ETAG, False),
    # Without Last-Modified, the stored Date (RFC 9111 §4.3.2), then the time it was received.
    ("ims-uses-date", [("If-Modified-Since", http_date(NOW))], h(("Date", http_date(NOW - 5))),
     True),
    ("ims-equal-date", [("If-Modified-Since", http_date(NOW - 5))],
     h(("Date", http_date(NOW - 5))), True),
    ("ims-before-date", [("If-Modified-Since", http_date(NOW - 6))],
     h(("Date", http_date(NOW - 5))), False),
    ("ims-date-beats-received", [("If-Modified-Since", http_date(NOW - 60))],
     h(("Date", http_date(NOW - 5))), False),
    ("ims-last-modified-beats-date", [("If-Modified-Since", http_date(NOW - 60))],
     h(("Last-Modified", http_date(NOW - 100)), ("Date", http_date(NOW))), True),
    ("ims-no-dates-received-before", [("If-Modified-Since", http_date(NOW))], h(), True),
    ("ims-no-dates-received-after", [("If-Modified-Since", http_date(NOW - 200))], h(), False),
    ("ims-invalid-date-received-before", [("If-Modified-Since", http_date(NOW))],
     h(("Date", NEAR_MISS_DATE)), True),
    # An invalid Last-Modified is ignored, so Date decides (RFC 9111 §4.3.2).
    ("ims-invalid-last-modified", [("If-Modified-Since", http_date(NOW))],
     h(("Last-Modified", NEAR_MISS_DATE), ("Date", http_date(NOW + 50))), False),
    ("ims-invalid", [("If-Modified-Since", NEAR_MISS_DATE)], STORED_ETAG, False),
    ("unconditional", [], STORED_ETAG, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_headers", "stored", "expected"),
    [case[1:] for case in CONDITIONALS],
    ids=[case[0] for case in CONDITIONALS],
)
def test_not_modified_for_client(
    request_headers: list[tuple[str, str]], stored: CIMultiDict[str], expected: bool
) -> None:
    received_at = NOW - 100  # when the cache got the stored response
    assert not_modified_for_client(h(*request_headers), stored, received_at) is expected


def test_merge_304_replaces_fields_but_not_content_length() -> None:
    stored = h(
        ("Content-Type", "text/plain"),
        ("Content-Length", "42"),
        ("Content-Encoding", "gzip"),
        ("ETag", '"v1"'),
        ("Link", "<a>"),
        ("Link", "<b>"),
        ("X-Keep", "yes"),
    )
    fresh = h(
        ("etag", '"v2"'),
        ("Content-Length", "0"),
        ("Content-Encoding", "identity"),
        ("Link", "<c>"),
        ("Cache-Control", "max-age=10"),
        ("Cache-Control", "public"),
    )
    merged = merge_304_headers(stored, CIMultiDictProxy(fresh))
    assert merged["ETag"] == '"v2"'
    assert merged.getall("Link") == ["<c>"]
    assert merged.getall("Cache-Control") == ["max-age=10", "public"]
    assert merged["Content-Length"] == "42"
    assert merged["Content-Encoding"] == "gzip"
    assert merged["X-Keep"] == "yes"
    assert stored["ETag"] == '"v1"'  # input untouched
    assert isinstance(merged, CIMultiDict)
