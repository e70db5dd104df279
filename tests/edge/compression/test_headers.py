"""The header rewrites that go with a new content coding: pure, no sockets."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.edge.compression.headers import transformed_headers, vary_accept_encoding
from proxy.edge.compression.rules import CompressionRules
from tests.edge.compression.samples import BODY, headers


def upstream() -> CIMultiDict[str]:
    return CIMultiDict(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(BODY))),
            ("ETag", '"abc"'),
            ("Vary", "Origin"),
            ("Accept-Ranges", "bytes"),
            ("Content-MD5", "xyz"),
            ("X-Kept", "1"),
        ]
    )


def test_transformed_headers(rules: CompressionRules) -> None:
    original = upstream()
    encoded = rules.encode(BODY, "br")
    out = transformed_headers(CIMultiDictProxy(original), "br", len(encoded))
    assert out["Content-Encoding"] == "br"
    assert out.getall("Content-Length") == [str(len(encoded))]
    assert out.getall("Vary") == ["Origin, Accept-Encoding"]
    assert out["ETag"] == 'W/"abc"'
    assert "Accept-Ranges" not in out and "Content-MD5" not in out
    assert out["X-Kept"] == "1" and out["Content-Type"] == "application/json"
    assert original["ETag"] == '"abc"' and "Content-Encoding" not in original  # a copy


def test_transformed_headers_for_streaming_drops_length() -> None:
    out = transformed_headers(upstream(), "gzip", None)
    assert "Content-Length" not in out
    assert out["Content-Encoding"] == "gzip"


@pytest.mark.parametrize(
    ("etag", "expected"),
    [('"abc"', 'W/"abc"'), ('W/"abc"', 'W/"abc"'), ('""', 'W/""'), ("abc", None)],
)
def test_etag_weakening(etag: str, expected: str | None) -> None:
    out = transformed_headers(headers(ETag=etag), "gzip", 10)
    assert out.get("ETag") == expected


def test_decoded_headers_remove_content_encoding() -> None:
    response = upstream()
    response["Content-Encoding"] = "gzip"
    out = transformed_headers(response, "identity", len(BODY))
    assert "Content-Encoding" not in out
    assert out["Content-Length"] == str(len(BODY))
    assert out["ETag"] == 'W/"abc"'
    assert out["Vary"] == "Origin, Accept-Encoding"


def test_vary_accept_encoding_for_uncompressed_eligible_response() -> None:
    response = headers(Vary="origin, accept-encoding", Content_Type="text/plain")
    vary_accept_encoding(response)
    assert response.getall("Vary") == ["origin, accept-encoding"]
    plain = headers(Content_Type="text/plain")
    vary_accept_encoding(plain)
    assert plain["Vary"] == "Accept-Encoding"
