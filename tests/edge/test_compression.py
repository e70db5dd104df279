"""Negotiation, eligibility, codecs and header rewrites: pure, no sockets."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

try:  # the optional zstd path is tested too, never skipped
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError

from proxy.config import compression as compression_settings
from proxy.config.compression import CompressionConfig
from proxy.edge import compression
from proxy.edge.compression import (
    PIECE,
    CodingError,
    CompressionPolicy,
    decoded,
    is_acceptable,
    negotiate,
    stream_decoder,
    transformed_headers,
    vary_accept_encoding,
)

BODY = (
    b'{"items": ['
    + b", ".join(b'{"id": %d, "name": "item %d"}' % (i, i) for i in range(400))
    + b"]}"
)


def decode(body: bytes, coding: str) -> bytes:
    return b"".join(decoded(body, coding))


def make_policy(**kwargs: object) -> CompressionPolicy:
    return CompressionPolicy(CompressionConfig.model_validate(kwargs))


@pytest.fixture
def policy() -> CompressionPolicy:
    return make_policy(algorithms=["br", "gzip"], level={"gzip": 9}, stream_level={"br": 0})


@pytest.fixture
def no_zstd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as if the optional zstd package were not installed."""
    monkeypatch.setattr(compression_settings, "ZSTD_INSTALLED", False)
    monkeypatch.setattr(compression, "_zstd", None)


def headers(**items: str) -> CIMultiDict[str]:
    return CIMultiDict({k.replace("_", "-"): v for k, v in items.items()})


# --- without zstd -----------------------------------------------------------------------


def test_zstd_without_the_package_is_a_config_error_and_not_offered(no_zstd: None) -> None:
    with pytest.raises(ValidationError, match=r"backports\.zstd"):
        CompressionConfig(algorithms=["br", "zstd", "gzip"])
    policy = make_policy()
    assert policy.offered == ("br", "gzip")
    assert policy.negotiate("zstd") is None
    assert policy.negotiate("zstd, gzip;q=0.1") == "gzip"
    with pytest.raises(CodingError):
        stream_decoder("zstd")


# --- negotiate --------------------------------------------------------------------------

BR_GZIP = ("br", "gzip")
ALL = ("br", "zstd", "gzip")


@pytest.mark.parametrize(
    ("accept", "offered", "expected"),
    [
        (None, BR_GZIP, None),  # no header: conservative, no compression
        ("", BR_GZIP, None),  # empty: identity only
        ("gzip", BR_GZIP, "gzip"),
        ("gzip, br", BR_GZIP, "br"),  # tie: server preference
        ("gzip, deflate, br, zstd", ALL, "br"),
        ("gzip, zstd", ALL, "zstd"),
        ("br;q=0.5, gzip", BR_GZIP, "gzip"),
        ("br;q=0.9, gzip;q=0.8", BR_GZIP, "br"),
        ("GZIP ; Q = 0.8 ,  BR;q=0.9", BR_GZIP, "br"),  # case and whitespace
        ("gzip;q=0", BR_GZIP, None),
        ("gzip;q=0, br;q=0", BR_GZIP, None),
        ("gzip;q=0, *", BR_GZIP, "br"),
        ("br;q=0, *", BR_GZIP, "gzip"),
        ("*", BR_GZIP, "br"),
        ("*;q=0", BR_GZIP, None),
        ("*;q=0, gzip", BR_GZIP, "gzip"),
        ("*;q=0.5, gzip", BR_GZIP, "gzip"),  # listed beats the wildcard
        ("identity", BR_GZIP, None),
        ("identity;q=1, gzip;q=0.5", BR_GZIP, None),  # client prefers identity
        ("gzip, identity;q=0.5", BR_GZIP, "gzip"),
        ("gzip, identity", BR_GZIP, "gzip"),  # tie with identity: compress
        ("gzip;q=0.5", BR_GZIP, "gzip"),  # implicit identity does not outrank a listed coding
        ("x-gzip", BR_GZIP, "gzip"),
        ("deflate", BR_GZIP, None),
        ("deflate", ("deflate", "gzip"), None),  # never deflate, even if offered
        ("deflate, gzip;q=0.1", BR_GZIP, "gzip"),
        ("zstd", BR_GZIP, None),  # not offered
        ("gzip;q=abc", BR_GZIP, None),  # malformed q: entry ignored
        ("gzip;q=abc, br;q=0.1", BR_GZIP, "br"),
        ("gzip;q=1.5", BR_GZIP, None),
        ("gzip;q=-1", BR_GZIP, None),
        ("gzip;q=nan", BR_GZIP, None),
        ("gzip;q=", BR_GZIP, None),
        ('gzip;q="1"', BR_GZIP, None),
        ("gzip;q=0.000", BR_GZIP, None),
        ("gzip;q=0.001, br;q=0", BR_GZIP, "gzip"),
        ("gzip;q=1.000", BR_GZIP, "gzip"),
        ("gzip;q=0.5000", BR_GZIP, "gzip"),  # extra digits tolerated
        ("br;q=0.5, br;q=0", BR_GZIP, None),  # listed twice: the refusal wins
        ("gzip;level=9", BR_GZIP, "gzip"),  # unknown parameters ignored
        (",,, ;;; , gzip ,", BR_GZIP, "gzip"),
        ("\x00\xff\u2603", BR_GZIP, None),
        ("gzip", (), None),
    ],
)
def test_negotiate(accept: str | None, offered: tuple[str, ...], expected: str | None) -> None:
    assert negotiate(accept, offered) == expected
    assert negotiate(accept, offered) == expected  # the cached answer is the same


def test_negotiate_cache_is_keyed_by_offer_and_bounded() -> None:
    assert negotiate("gzip, br", ("gzip", "br")) == "gzip"
    assert negotiate("gzip, br", ("br", "gzip")) == "br"
    for i in range(2000):
        negotiate(f"gzip;q=0.{i % 1000:03d}, x-{i}", BR_GZIP)
    assert len(compression._negotiated_cache) <= 512
    assert len(compression._parsed_cache) <= 512
    assert negotiate("x" * 1000 + ", gzip", BR_GZIP) == "gzip"  # long values work, uncached


@given(st.one_of(st.none(), st.text(max_size=200)), st.sampled_from([BR_GZIP, ALL, ("gzip",), ()]))
def test_negotiate_never_raises_and_only_returns_offered(
    accept: str | None, offered: tuple[str, ...]
) -> None:
    result = negotiate(accept, offered)
    assert result is None or (result in offered and result != "deflate")


qvalue = st.sampled_from(["", ";q=0", ";q=0.1", ";q=0.5", ";q=0.9", ";q=1", ";Q=0.50"])
element = st.tuples(st.sampled_from(["br", "gzip", "zstd", "deflate", "*", "identity"]), qvalue)


@given(st.lists(element, max_size=6))
def test_negotiate_picks_a_coding_with_maximal_q(elements: list[tuple[str, str]]) -> None:
    header = ", ".join(c + q for c, q in elements)
    result = negotiate(header, ALL)

    def q_of(coding: str) -> float:
        # Reference semantics, written independently of the implementation.
        qs = [float(q.split("=")[1]) if q else 1.0 for c, q in elements if c == coding]
        if qs:
            return min(qs)
        star = [float(q.split("=")[1]) if q else 1.0 for c, q in elements if c == "*"]
        return min(star) if star else 0.0

    best = max(q_of(c) for c in ALL)
    if result is None:
        identity = [c for c, _ in elements if c == "identity"]
        assert best == 0.0 or (identity and q_of("identity") > best)
    else:
        assert q_of(result) == best > 0
        assert all(q_of(c) < best for c in ALL[: ALL.index(result)])  # earlier ones lost


@pytest.mark.parametrize(
    ("accept", "coding", "expected"),
    [
        ("gzip", "gzip", True),
        ("gzip", "x-gzip", True),
        ("gzip;q=0.1", "gzip", True),
        ("gzip;q=0", "gzip", False),
        ("br", "gzip", False),
        ("*", "deflate", True),
        ("*;q=0", "gzip", False),
        ("deflate", "deflate", True),
        (None, "gzip", False),  # no header: do not send a coding nobody asked for
        (None, "identity", True),
        ("gzip", "identity", True),
        ("identity;q=0", "identity", False),
        ("*;q=0", "identity", False),
        ("*;q=0, identity", "identity", True),
    ],
)
def test_is_acceptable(accept: str | None, coding: str, expected: bool) -> None:
    assert is_acceptable(accept, coding) is expected


# --- should_compress --------------------------------------------------------------------


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
    policy = make_policy(types=["application/json", "text/*", "application/javascript"])
    response = headers(Content_Type="application/json")
    response.update(extra)
    assert policy.should_compress(status, CIMultiDictProxy(response), size) is expected


def test_should_compress_needs_a_content_type(policy: CompressionPolicy) -> None:
    assert not policy.should_compress(200, CIMultiDict(), 5000)


def test_should_compress_with_any_type_and_no_algorithms() -> None:
    anything = make_policy(types=["*/*"])
    assert anything.should_compress(200, headers(Content_Type="image/png"), 5000)
    nothing = make_policy(algorithms=[])
    assert nothing.offered == ()
    assert not nothing.should_compress(200, headers(Content_Type="text/plain"), 5000)


# --- encode / decode --------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_encode_round_trip(policy: CompressionPolicy, coding: str) -> None:
    encoded = policy.encode(BODY, coding)
    assert len(encoded) < len(BODY) // 3
    assert decode(encoded, coding) == BODY
    reference = gzip.decompress(encoded) if coding == "gzip" else brotli.decompress(encoded)
    assert reference == BODY


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_stream_encoder_round_trip(policy: CompressionPolicy, coding: str) -> None:
    encoder = policy.stream_encoder(coding)
    chunks = [BODY[i : i + 1000] for i in range(0, len(BODY), 1000)]
    encoded = b"".join(encoder.compress(c) for c in chunks) + encoder.flush()
    assert decode(encoded, coding) == BODY


def test_levels_are_applied(policy: CompressionPolicy) -> None:
    # gzip's XFL header byte records the extremes: 2 = slowest (level 9), 4 = fastest.
    assert policy.encode(BODY, "gzip")[8] == 2
    encoder = policy.stream_encoder("gzip")
    assert (encoder.compress(BODY) + encoder.flush())[8] == 4
    fast = policy.stream_encoder("br")  # quality 0 in this fixture, 5 for stored variants
    assert len(fast.compress(BODY) + fast.flush()) > len(policy.encode(BODY, "br"))


def test_encode_refuses_a_coding_not_offered(policy: CompressionPolicy) -> None:
    for coding in ("deflate", "zstd", "identity", "compress"):
        with pytest.raises(CodingError):
            policy.encode(BODY, coding)
        with pytest.raises(CodingError):
            policy.stream_encoder(coding)


@pytest.mark.parametrize(
    ("encoded", "coding"),
    [
        (gzip.compress(BODY), "gzip"),
        (gzip.compress(BODY), "X-GZIP"),
        (brotli.compress(BODY), "br"),
        (zlib.compress(BODY), "deflate"),  # RFC 9110 deflate: zlib-wrapped
        (zlib.compress(BODY)[2:-4], "deflate"),  # raw deflate, as some servers send
        (BODY, "identity"),
    ],
)
def test_decode_whole_and_byte_by_byte(encoded: bytes, coding: str) -> None:
    assert decode(encoded, coding) == BODY
    if coding == "identity":
        return
    decoder = stream_decoder(coding)
    out = b"".join(b"".join(decoder.decompress(encoded[i : i + 1])) for i in range(len(encoded)))
    decoder.finish()
    assert out == BODY


def test_decode_concatenated_gzip_members() -> None:
    body = gzip.compress(b"hello ") + gzip.compress(b"world")
    assert decode(body, "gzip") == b"hello world"
    decoder = stream_decoder("gzip")
    out = b"".join(b"".join(decoder.decompress(body[i : i + 7])) for i in range(0, len(body), 7))
    decoder.finish()
    assert out == b"hello world"


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate"])
def test_decode_empty_body(coding: str) -> None:
    assert decode(b"", coding) == b""


@pytest.mark.parametrize(
    ("encoded", "coding"),
    [
        (gzip.compress(BODY)[:-20], "gzip"),
        (brotli.compress(BODY)[:-5], "br"),
        (zlib.compress(BODY)[:-20], "deflate"),
        (b"x", "deflate"),
    ],
)
def test_truncated_body_is_an_error(encoded: bytes, coding: str) -> None:
    with pytest.raises(CodingError, match="truncated"):
        decode(encoded, coding)


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate"])
def test_corrupt_body_is_an_error(coding: str) -> None:
    with pytest.raises(CodingError):
        decode(b"\xff" * 64, coding)


@pytest.mark.parametrize("coding", ["compress", "gzip, br", "lz4"])
def test_unknown_coding_is_an_error(coding: str) -> None:
    with pytest.raises(CodingError):
        decode(b"data", coding)


@settings(max_examples=50)
@given(st.binary(max_size=200), st.sampled_from(["gzip", "br", "deflate"]))
def test_decode_fails_only_with_coding_error(data: bytes, coding: str) -> None:
    try:
        result = decode(data, coding)
    except CodingError:
        return
    assert isinstance(result, bytes)


@settings(max_examples=30)
@given(st.lists(st.binary(max_size=300), max_size=8), st.sampled_from(["gzip", "br"]))
def test_stream_round_trip_property(chunks: list[bytes], coding: str) -> None:
    policy = make_policy()
    encoder = policy.stream_encoder(coding)
    encoded = b"".join(encoder.compress(c) for c in chunks) + encoder.flush()
    assert decode(encoded, coding) == b"".join(chunks)


ZEROS = bytes(64 * 2**20)
BOMBS = {  # 64 MiB of zeros, from 2 KB to 65 KB on the wire
    "gzip": lambda: zlib.compress(ZEROS, 9, wbits=31),
    "deflate": lambda: zlib.compress(ZEROS, 9),
    "br": lambda: brotli.compress(ZEROS, quality=5),
    "zstd": lambda: zstd.compress(ZEROS),
}
# brotli stops growing its output buffer once past the limit: a piece may overshoot a little.
MOST = 2 * PIECE


@pytest.mark.parametrize("coding", sorted(BOMBS))
def test_a_bomb_decodes_in_bounded_pieces_whole_or_fed_in_chunks(coding: str) -> None:
    bomb = BOMBS[coding]()
    sizes = [len(piece) for piece in decoded(bomb, coding)]
    assert sum(sizes) == len(ZEROS)
    assert max(sizes) <= MOST
    decoder = stream_decoder(coding)
    total = 0
    for i in range(0, len(bomb), 4096):
        for piece in decoder.decompress(bomb[i : i + 4096]):
            assert len(piece) <= MOST
            total += len(piece)
    decoder.finish()
    assert total == len(ZEROS)


def test_pieces_are_decoded_only_as_they_are_taken() -> None:
    pieces = decoded(BOMBS["gzip"](), "gzip")
    assert len(next(pieces)) <= PIECE  # the other 64 MiB do not exist yet
    pieces.close()


def test_a_zstd_window_over_8_mib_is_refused() -> None:
    """The window is the decoder's memory; RFC 9659 caps it at 8 MiB for HTTP."""
    wide = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: 24})
    frame = wide.compress(ZEROS[: 20 * 2**20]) + wide.flush()
    with pytest.raises(CodingError, match="memory"):
        decode(frame, "zstd")
    narrow = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: 23})
    assert decode(narrow.compress(BODY) + narrow.flush(), "zstd") == BODY


# --- headers ----------------------------------------------------------------------------


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


def test_transformed_headers(policy: CompressionPolicy) -> None:
    original = upstream()
    encoded = policy.encode(BODY, "br")
    out = policy.transformed_headers(CIMultiDictProxy(original), "br", len(encoded))
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


def test_vary_accept_encoding_for_uncompressed_eligible_response(policy: CompressionPolicy) -> None:
    response = headers(Vary="origin, accept-encoding", Content_Type="text/plain")
    policy.vary_accept_encoding(response)
    assert response.getall("Vary") == ["origin, accept-encoding"]
    plain = headers(Content_Type="text/plain")
    vary_accept_encoding(plain)
    assert plain["Vary"] == "Accept-Encoding"


# --- zstd (optional extra) --------------------------------------------------------------


def test_zstd_configured_offered_and_round_trips() -> None:
    policy = make_policy(algorithms=["zstd", "br", "gzip"], level={"zstd": 19})
    assert policy.offered == ("zstd", "br", "gzip")
    assert policy.negotiate("gzip, br, zstd") == "zstd"
    encoded = policy.encode(BODY, "zstd")
    assert zstd.decompress(encoded) == BODY
    assert decode(encoded, "zstd") == BODY
    encoder = policy.stream_encoder("zstd")
    streamed = b"".join(encoder.compress(BODY[i : i + 500]) for i in range(0, len(BODY), 500))
    streamed += encoder.flush()
    assert decode(streamed, "zstd") == BODY
    assert len(streamed) > len(encoded)  # level 1 vs 19


def test_zstd_decoder_handles_frames_chunks_and_truncation() -> None:
    body = zstd.compress(b"hello ") + zstd.compress(b"world")
    decoder = stream_decoder("zstd")
    out = b"".join(b"".join(decoder.decompress(body[i : i + 3])) for i in range(0, len(body), 3))
    decoder.finish()
    assert out == b"hello world"
    with pytest.raises(CodingError, match="truncated"):
        decode(zstd.compress(BODY)[:-10], "zstd")
    with pytest.raises(CodingError):
        decode(b"\xff" * 32, "zstd")


def test_policy_drops_zstd_if_it_disappears_after_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = CompressionConfig(algorithms=["br", "zstd", "gzip"])
    monkeypatch.setattr(compression, "_zstd", None)
    assert CompressionPolicy(config).offered == ("br", "gzip")
