"""Encoders and bounded decoders: round trips, bad bodies, bombs. Pure, no sockets."""

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

from proxy.edge.compression.codecs import PIECE, CodingError, decoded, stream_decoder
from proxy.edge.compression.rules import CompressionRules
from tests.edge.compression.samples import BODY, decode, make_rules


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_encode_round_trip(rules: CompressionRules, coding: str) -> None:
    encoded = rules.encode(BODY, coding)
    assert len(encoded) < len(BODY) // 3
    assert decode(encoded, coding) == BODY
    reference = gzip.decompress(encoded) if coding == "gzip" else brotli.decompress(encoded)
    assert reference == BODY


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_stream_encoder_round_trip(rules: CompressionRules, coding: str) -> None:
    encoder = rules.stream_encoder(coding)
    chunks = [BODY[i : i + 1000] for i in range(0, len(BODY), 1000)]
    encoded = b"".join(encoder.compress(c) for c in chunks) + encoder.flush()
    assert decode(encoded, coding) == BODY


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
    rules = make_rules()
    encoder = rules.stream_encoder(coding)
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


def test_a_zstd_window_over_8_mib_is_refused() -> None:
    """The window is the decoder's memory; RFC 9659 caps it at 8 MiB for HTTP."""
    wide = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: 24})
    frame = wide.compress(ZEROS[: 20 * 2**20]) + wide.flush()
    with pytest.raises(CodingError, match="memory"):
        decode(frame, "zstd")
    narrow = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: 23})
    assert decode(narrow.compress(BODY) + narrow.flush(), "zstd") == BODY


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
