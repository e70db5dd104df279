"""Which responses a route compresses, with which codings and levels: pure, no sockets."""

from __future__ import annotations

try:  # the optional zstd path is tested too, never skipped
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError

from proxy.config.compression import CompressionSettings
from proxy.edge.compression import codecs
from proxy.edge.compression.codecs import CodingError, stream_decoder
from proxy.edge.compression.rules import CompressionRules
from tests.edge.compression.samples import BODY, decode, headers, make_rules


def test_zstd_without_the_package_is_a_config_error_and_not_offered(no_zstd: None) -> None:
    with pytest.raises(ValidationError, match=r"backports\.zstd"):
        CompressionSettings(algorithms=["br", "zstd", "gzip"])
    rules = make_rules()
    assert rules.offered == ("br", "gzip")
    assert rules.negotiate("zstd") is None
    assert rules.negotiate("zstd, gzip;q=0.1") == "gzip"
    with pytest.raises(CodingError):
        stream_decoder("zstd")


@pytest.mark.parametrize(
    ("status", "extra", "size", "expected"),
    [
        (200, {}, 2000, True),
        (200, {}, 1000, True),  # min_size is inclusive
        (200, {}, 999, False),
        (200, {}, 0, False),
        (200, {}, None, True),  # streamed, unknown size
        (200, {"Content-Length": "10"}, None, False),
        (200, {"Content-Length": "5000"}, None, True),
        (200, {"Content-Length": "junk"}, None, True),
        (200, {"Content-Length": "10"}, 5000, True),  # the actual size wins
        (404, {}, 2000, True),
        (500, {}, 2000, True),
        (206, {}, 2000, False),
        (204, {}, 2000, False),
        (304, {}, 2000, False),
        (100, {}, 2000, False),
        (101, {}, 2000, False),
        (200, {"Content-Range": "bytes 0-1999/4000"}, 2000, False),
        (200, {"Content-Encoding": "gzip"}, 2000, False),
        (200, {"Content-Encoding": "br"}, 2000, False),
        (200, {"Content-Encoding": "identity"}, 2000, True),
        (200, {"Cache-Control": "public, no-transform"}, 2000, False),
        (200, {"Cache-Control": "NO-TRANSFORM"}, 2000, False),
        (200, {"Cache-Control": "max-age=60"}, 2000, True),
        (200, {"Cache-Control": 'private="no-transform-ish"'}, 2000, True),
        (200, {"Content-Type": "text/html; charset=utf-8"}, 2000, True),
        (200, {"Content-Type": "TEXT/CSS"}, 2000, True),
        (200, {"Content-Type": "application/json;charset=UTF-8"}, 2000, True),
        (200, {"Content-Type": "application/javascript"}, 2000, True),
        (200, {"Content-Type": "image/png"}, 2000, False),
        (200, {"Content-Type": "application/jsonp"}, 2000, False),
        (200, {"Content-Type": "application/octet-stream"}, 2000, False),
        (200, {"Content-Type": "text"}, 2000, False),
        (200, {"Content-Type": ""}, 2000, False),
        (200, {"Content-Type": "text/event-stream"}, None, False),
    ],
)
def test_should_compress(
    status: int, extra: dict[str, str], size: int | None, expected: bool
) -> None:
    rules = make_rules(types=["application/json", "text/*", "application/javascript"])
    response = headers(Content_Type="application/json")
    response.update(extra)
    assert rules.should_compress(status, CIMultiDictProxy(response), size) is expected


def test_content_types_give_the_same_answer_when_asked_again_and_past_the_remembered() -> None:
    """Each Content-Type's answer is remembered (up to a bound): remembered or not, the
    answer is the one a first look gives."""
    rules = make_rules(types=["application/json", "text/*"])
    many = [f"text/x-{i}" for i in range(300)] + [f"image/x-{i}" for i in range(300)]
    long = "text/plain; " + "x" * 200  # answered, never kept
    for _ in range(2):
        for content_type in ["application/json; charset=utf-8", "image/png", long, *many]:
            response = headers(Content_Type=content_type)
            expected = not content_type.startswith("image/")
            assert rules.should_compress(200, response, 5000) is expected, content_type
    assert long not in rules._types and len(rules._types) == 256


def test_should_compress_needs_a_content_type(rules: CompressionRules) -> None:
    assert not rules.should_compress(200, CIMultiDict(), 5000)


def test_should_compress_with_any_type_and_no_algorithms() -> None:
    anything = make_rules(types=["*/*"])
    assert anything.should_compress(200, headers(Content_Type="image/png"), 5000)
    nothing = make_rules(algorithms=[])
    assert nothing.offered == ()
    assert not nothing.should_compress(200, headers(Content_Type="text/plain"), 5000)


def test_levels_are_applied(rules: CompressionRules) -> None:
    # gzip's XFL header byte records the extremes: 2 = slowest (level 9), 4 = fastest.
    assert rules.encode(BODY, "gzip")[8] == 2
    encoder = rules.stream_encoder("gzip")
    assert (encoder.compress(BODY) + encoder.flush())[8] == 4
    fast = rules.stream_encoder("br")  # quality 0 in this fixture, 5 for stored variants
    assert len(fast.compress(BODY) + fast.flush()) > len(rules.encode(BODY, "br"))


def test_encode_refuses_a_coding_not_offered(rules: CompressionRules) -> None:
    for coding in ("deflate", "zstd", "identity", "compress"):
        with pytest.raises(CodingError):
            rules.encode(BODY, coding)
        with pytest.raises(CodingError):
            rules.stream_encoder(coding)


def test_zstd_configured_offered_and_round_trips() -> None:
    rules = make_rules(algorithms=["zstd", "br", "gzip"], level={"zstd": 19})
    assert rules.offered == ("zstd", "br", "gzip")
    assert rules.negotiate("gzip, br, zstd") == "zstd"
    encoded = rules.encode(BODY, "zstd")
    assert zstd.decompress(encoded) == BODY
    assert decode(encoded, "zstd") == BODY
    encoder = rules.stream_encoder("zstd")
    streamed = b"".join(encoder.compress(BODY[i : i + 500]) for i in range(0, len(BODY), 500))
    streamed += encoder.flush()
    assert decode(streamed, "zstd") == BODY
    assert len(streamed) > len(encoded)  # level 1 vs 19


def test_rules_drop_zstd_if_it_disappears_after_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = CompressionSettings(algorithms=["br", "zstd", "gzip"])
    monkeypatch.setattr(codecs, "_zstd", None)
    assert CompressionRules(config).offered == ("br", "gzip")
