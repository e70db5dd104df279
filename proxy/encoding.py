"""Encode for the client: which bytes and headers a client gets, given its Accept-Encoding.

Pure decisions over the compression policy; the bytes are produced by the callers
(once per stored variant, or chunk by chunk for a streamed response).
"""

from __future__ import annotations

from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.compression import (
    CodingError,
    CompressionPolicy,
    Decoder,
    Encoder,
    decode,
    is_acceptable,
    stream_decoder,
    transformed_headers,
    vary_accept_encoding,
)
from proxy.cors import Headers

# Variant keys besides a coding name ("br", "gzip", "zstd").
AS_STORED = "as-stored"  # the stored bytes, with Vary: Accept-Encoding added
DECODED = "identity"  # the stored (upstream-encoded) bytes decoded


class BodyCoder(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...
    def finish(self) -> bytes: ...


class _Encode:
    __slots__ = ("_encoder",)

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder

    def feed(self, chunk: bytes) -> bytes:
        return self._encoder.compress(chunk)

    def finish(self) -> bytes:
        return self._encoder.flush()


class _Decode:
    __slots__ = ("_decoder",)

    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder

    def feed(self, chunk: bytes) -> bytes:
        return self._decoder.decompress(chunk)

    def finish(self) -> bytes:
        return self._decoder.flush()


def _encoding(headers: Headers) -> str:
    coding = headers.get("Content-Encoding", "").strip().lower()
    return "" if coding == "identity" else coding


def plan_stream(
    policy: CompressionPolicy,
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
    policy: CompressionPolicy, status: int, headers: Headers, size: int, accept: str | None
) -> str | None:
    """Which variant of a stored response this client gets; None: the stored one as is."""
    upstream_coding = _encoding(headers)
    if upstream_coding:
        return AS_STORED if is_acceptable(accept, upstream_coding) else DECODED
    if not policy.should_compress(status, headers, size):
        return None
    return policy.negotiate(accept) or AS_STORED


def make_variant(
    policy: CompressionPolicy, headers: Headers, body: bytes, key: str
) -> tuple[CIMultiDictProxy[str], bytes]:
    """The bytes and headers of one variant; made once per stored entry, then reused."""
    if key == AS_STORED:
        out = CIMultiDict(headers)
        vary_accept_encoding(out)
        return CIMultiDictProxy(out), body
    if key == DECODED:
        try:
            body = decode(body, _encoding(headers))
        except CodingError:
            return make_variant(policy, headers, body, AS_STORED)
    else:
        body = policy.encode(body, key)
    return CIMultiDictProxy(transformed_headers(headers, key, len(body))), body
