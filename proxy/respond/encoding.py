"""Encode for the client: which bytes and headers a client gets, given its Accept-Encoding.

Pure decisions over the compression policy; the bytes are produced by the callers
(once per stored variant, or chunk by chunk for a streamed response). Decoding yields
bounded pieces: a body that inflates past what may be stored is sent as it is decoded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy, istr

from proxy.edge.compression.codecs import CodingError, Decoder, Encoder, decoded, stream_decoder
from proxy.edge.compression.headers import transformed_headers, vary_accept_encoding
from proxy.edge.compression.negotiate import is_acceptable
from proxy.edge.compression.rules import CompressionRules
from proxy.http.headers import Headers

# Variant keys besides a coding name ("br", "gzip", "zstd").
AS_STORED = "as-stored"  # the stored bytes, with Vary: Accept-Encoding added
DECODED = "identity"  # the stored (upstream-encoded) bytes decoded


Variant = tuple[CIMultiDictProxy[str], bytes]


@dataclass(frozen=True, slots=True)
class DecodedStream:
    """A decoded body larger than an entry may be: sent as it is decoded, never kept."""

    headers: CIMultiDictProxy[str]
    pieces: Iterator[bytes]  # decoded lazily, each at most about codecs.PIECE bytes


class BodyCoder(Protocol):
    # Whether the output can be far larger than the input (a decoder: 1 KB of gzip can be
    # 1 MB of body). Such output is never gathered whole.
    inflates: bool

    def feed(self, chunk: bytes) -> Iterable[bytes]: ...
    def finish(self) -> Iterable[bytes]: ...


class _Encode:
    __slots__ = ("_encoder",)
    inflates = False

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder

    def feed(self, chunk: bytes) -> Iterable[bytes]:
        return (self._encoder.compress(chunk),)

    def finish(self) -> Iterable[bytes]:
        return (self._encoder.flush(),)


class _Decode:
    __slots__ = ("_decoder",)
    inflates = True

    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder

    def feed(self, chunk: bytes) -> Iterable[bytes]:
        return self._decoder.decompress(chunk)

    def finish(self) -> Iterable[bytes]:
        self._decoder.finish()
        return ()


_CONTENT_ENCODING = istr("Content-Encoding")  # a str name is case-folded on every lookup


def _encoding(headers: Headers) -> str:
    coding = headers.get(_CONTENT_ENCODING, "").strip().lower()
    return "" if coding == "identity" else coding


def stream_coding(
    policy: CompressionRules,
    accept_encoding: str | None,
    status: int,
    headers: CIMultiDict[str],
    length: int | None,
) -> tuple[CIMultiDict[str], BodyCoder | None]:
    """Headers and chunk coder for a response relayed as it arrives (fast levels)."""
    upstream_coding = _encoding(headers)
    if upstream_coding:
        if is_acceptable(accept_encoding, upstream_coding):
            vary_accept_encoding(headers)
            return headers, None  # already compressed upstream: passed through untouched
        try:
            decoder = stream_decoder(upstream_coding)
        except CodingError:
            return headers, None  # a coding we cannot decode: pass it through as it is
        return transformed_headers(headers, DECODED, None), _Decode(decoder)
    if not policy.should_compress(status, headers, length):
        return headers, None
    coding = policy.negotiate(accept_encoding)
    if coding is None:
        vary_accept_encoding(headers)
        return headers, None
    return transformed_headers(headers, coding, None), _Encode(policy.stream_encoder(coding))


def variant_for(
    policy: CompressionRules, status: int, headers: Headers, size: int, accept: str | None
) -> str | None:
    """Which variant of a stored response this client gets; None: the stored one as is."""
    upstream_coding = _encoding(headers)
    if upstream_coding:
        return AS_STORED if is_acceptable(accept, upstream_coding) else DECODED
    if not policy.should_compress(status, headers, size):
        return None
    return policy.negotiate(accept) or AS_STORED


def make_variant(
    policy: CompressionRules, headers: Headers, body: bytes, key: str, max_size: int
) -> Variant | DecodedStream:
    """The bytes and headers of one variant; made once per stored entry, then reused.

    A decoded variant is only made while it fits *max_size* (the route's `max_entry_size`):
    past that, decoding stops and the rest comes as a `DecodedStream`, to stream to this client.
    """
    if key == AS_STORED:
        out = CIMultiDict(headers)
        vary_accept_encoding(out)
        return CIMultiDictProxy(out), body
    if key == DECODED:
        kept: deque[bytes] = deque()
        size = 0
        try:
            pieces = decoded(body, _encoding(headers))
            for piece in pieces:
                kept.append(piece)
                size += len(piece)
                if size > max_size:
                    streamed = transformed_headers(headers, DECODED, None)
                    return DecodedStream(CIMultiDictProxy(streamed), _replay(kept, pieces))
        except CodingError:
            return make_variant(policy, headers, body, AS_STORED, max_size)
        body = b"".join(kept)
    else:
        body = policy.encode(body, key)
    return CIMultiDictProxy(transformed_headers(headers, key, len(body))), body


def _replay(kept: deque[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    """What was decoded already, each piece let go once sent, then the rest."""
    while kept:
        yield kept.popleft()
    yield from rest
