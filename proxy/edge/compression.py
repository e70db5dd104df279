"""Response compression: Accept-Encoding negotiation, eligibility, encoders/decoders and the
header rewrites that go with them, as the `compression:` section (proxy/config/compression.py)
says.

Everything here is synchronous and I/O-free. `encode`/`decoded` hold no shared state, so
large bodies can be handed to `asyncio.to_thread` (zlib, brotli and zstd release the GIL).
Decoders never produce more than `PIECE` bytes at a time: a small body can inflate to
gigabytes, and the callers decide how much of it to hold (see proxy/respond/encoding.py).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import brotli
from multidict import CIMultiDict

from proxy.config.compression import CompressionConfig
from proxy.http.headers import Headers
from proxy.http.vary import append_vary

# The standard library's zstd (Python 3.14), or its backport: unlike the `zstandard` package,
# its decoder takes `max_length`, so a zstd bomb is decoded a bounded piece at a time too.
try:
    from compression import zstd as _zstd  # type: ignore[import-not-found]
except ImportError:
    try:
        from backports import zstd as _zstd
    except ImportError:  # optional extra: zstd is then neither configurable nor offered
        _zstd = None

__all__ = [
    "PIECE",
    "CodingError",
    "CompressionPolicy",
    "Decoder",
    "Encoder",
    "decoded",
    "is_acceptable",
    "negotiate",
    "stream_decoder",
    "transformed_headers",
    "vary_accept_encoding",
]

_QVALUE_RE = re.compile(r"0(?:\.[0-9]*)?|1(?:\.0*)?")  # RFC 9110 §12.4.2, extra digits tolerated
_CODING_ALIASES = {"x-gzip": "gzip"}  # RFC 9110 §8.4.1.3

# Header values longer than this are parsed but not cached, which bounds cache memory.
_CACHEABLE_LEN = 256
_CACHE_SIZE = 512

# No transformation for these: nothing to compress, or the byte range/partial content
# refers to the identity representation.
_NO_BODY_STATUSES = frozenset({204, 206, 304})

# Integrity/range headers describing the untransformed bytes; wrong once re-encoded.
_INVALIDATED = ("Content-MD5", "Content-Digest", "Repr-Digest", "Digest", "Accept-Ranges")


class CodingError(ValueError):
    """Unsupported content coding, or a body that does not decode."""


# --- negotiation -------------------------------------------------------------------------

_parsed_cache: dict[str, dict[str, float]] = {}
_negotiated_cache: dict[tuple[str, tuple[str, ...]], str | None] = {}


def _parse(accept_encoding: str) -> dict[str, float]:
    """coding -> q. Entries with a malformed q are dropped: never guess acceptability."""
    prefs = _parsed_cache.get(accept_encoding)
    if prefs is not None:
        return prefs
    prefs = {}
    for element in accept_encoding.split(","):
        coding, _, params = element.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q: float | None = 1.0
        for param in params.split(";") if params else ():
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                q = float(value) if _QVALUE_RE.fullmatch(value) else None
        if q is None:
            continue
        coding = _CODING_ALIASES.get(coding, coding)
        # A coding listed twice keeps its lowest q: a refusal (q=0) is never overridden.
        prefs[coding] = min(q, prefs.get(coding, q))
    if len(accept_encoding) <= _CACHEABLE_LEN:
        if len(_parsed_cache) >= _CACHE_SIZE:
            del _parsed_cache[next(iter(_parsed_cache))]  # FIFO eviction, O(1)
        _parsed_cache[accept_encoding] = prefs
    return prefs


def negotiate(accept_encoding: str | None, offered: tuple[str, ...]) -> str | None:
    """Pick a content coding per RFC 9110 §12.5.3, or None for identity.

    Highest q wins; ties go to the earliest in *offered* (the server's preference).
    `*` covers codings not listed. An explicitly listed `identity` with a higher q than
    every offered coding means no compression. A missing header means no compression
    (like nginx), although the RFC would allow any coding. Never returns deflate.
    """
    if accept_encoding is None:
        return None
    key = (accept_encoding, offered)
    try:
        return _negotiated_cache[key]
    except KeyError:
        pass
    prefs = _parse(accept_encoding)
    star = prefs.get("*", 0.0)
    best: str | None = None
    best_q = 0.0
    for coding in offered:
        q = prefs.get(coding, star)
        if q > best_q and coding != "deflate":
            best, best_q = coding, q
    if best is not None and prefs.get("identity", 0.0) > best_q:
        best = None
    if len(accept_encoding) <= _CACHEABLE_LEN:
        if len(_negotiated_cache) >= _CACHE_SIZE:
            del _negotiated_cache[next(iter(_negotiated_cache))]
        _negotiated_cache[key] = best
    return best


def is_acceptable(accept_encoding: str | None, coding: str) -> bool:
    """Whether a response already encoded with *coding* may be relayed to this client as is.

    Unlike `negotiate` this ignores preference: any q > 0 will do. A missing header
    accepts identity only (conservative, as in `negotiate`).
    """
    coding = coding.strip().lower()
    coding = _CODING_ALIASES.get(coding, coding)
    if accept_encoding is None:
        return coding in ("", "identity")
    prefs = _parse(accept_encoding)
    if coding in ("", "identity"):
        # Identity is acceptable unless refused explicitly or by `*;q=0` (RFC 9110 §12.5.3).
        return prefs.get("identity", prefs.get("*", 1.0)) > 0
    return prefs.get(coding, prefs.get("*", 0.0)) > 0


# --- encoders and decoders ---------------------------------------------------------------


class Encoder(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes:
        """End the stream and return the remaining bytes (like zlib's default Z_FINISH)."""
        ...


class Decoder(Protocol):
    def decompress(self, data: bytes, /) -> Iterator[bytes]:
        """The output for *data*, in pieces of at most about PIECE bytes, decoded as the
        iterator is consumed (consume it all before the next call). CodingError if corrupt."""
        ...

    def finish(self) -> None:
        """End of input: CodingError if the stream was cut short."""
        ...


class _BrotliEncoder:
    __slots__ = ("_compressor",)

    def __init__(self, quality: int) -> None:
        self._compressor = brotli.Compressor(quality=quality)

    def compress(self, data: bytes, /) -> bytes:
        return self._compressor.process(data)

    def flush(self) -> bytes:
        return self._compressor.finish()


# The most one decoding step produces. A body is decoded (and sent, or found too large to
# store) a piece at a time: 0.5 MB of gzip inflating to 512 MiB never exists whole.
PIECE = 64 * 1024
# zstd's window is the decoder's memory: RFC 9659 caps it at 8 MiB for HTTP content coding.
_ZSTD_WINDOW_LOG_MAX = 23

_DECODE_ERRORS: tuple[type[Exception], ...] = (zlib.error, brotli.error)
if _zstd is not None:
    _DECODE_ERRORS += (_zstd.ZstdError,)


def _zlib_pieces(d: Any, data: bytes) -> Iterator[bytes]:
    """Everything *d* (a zlib decompressobj) makes of *data*, PIECE bytes at most at a time."""
    while True:
        out = d.decompress(data, PIECE)
        if out:
            yield out
        # Input it had no room to decode waits in unconsumed_tail; a full piece may also
        # leave output pending inside zlib with no input left.
        data = d.unconsumed_tail
        if d.eof or (not data and len(out) < PIECE):
            return


def _zstd_pieces(d: Any, data: bytes) -> Iterator[bytes]:
    """Likewise for a zstd decompressor, which keeps unread input itself."""
    while True:
        out = d.decompress(data, PIECE)
        if out:
            yield out
        data = b""
        if d.eof or d.needs_input:
            return


class _FramedDecoder:
    """gzip or zstd, or deflate, through a decompressor that bounds its output.

    gzip members and zstd frames may be concatenated (both formats allow it), so a new
    decompressor is started on what follows the end of each one. deflate is one stream
    either zlib-wrapped (RFC 9110) or raw (what some servers send): sniffed from its header.
    """

    __slots__ = ("_d", "_factory", "_head", "_multi", "_pending", "_pieces")

    def __init__(
        self,
        factory: Callable[[], Any] | None,
        pieces: Callable[[Any, bytes], Iterator[bytes]] = _zlib_pieces,
    ) -> None:
        self._factory = factory
        self._pieces = pieces
        self._multi = factory is not None
        self._d: Any = None if factory is None else factory()
        self._head = b""  # deflate only: bytes held until the header can be sniffed
        self._pending = False  # input fed to the current decompressor, not yet at its end

    def decompress(self, data: bytes, /) -> Iterator[bytes]:
        try:
            yield from self._decompress(data)
        except _DECODE_ERRORS as exc:
            raise CodingError(f"corrupt compressed body: {exc}") from None

    def _decompress(self, data: bytes) -> Iterator[bytes]:
        if self._d is None:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            cmf, flg = data[0], data[1]
            zlib_wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        while data:
            self._pending = True
            yield from self._pieces(self._d, data)
            if not self._d.eof:
                return
            self._pending = False
            if not self._multi:
                return  # bytes after a deflate stream are ignored, as zlib itself does
            data = self._d.unused_data
            self._d = self._factory()  # type: ignore[misc]

    def finish(self) -> None:
        if self._pending or self._head:
            raise CodingError("truncated compressed body")


class _BrotliDecoder:
    __slots__ = ("_d", "_fed")

    def __init__(self) -> None:
        self._d = brotli.Decompressor()
        self._fed = False

    def decompress(self, data: bytes, /) -> Iterator[bytes]:
        if not data:
            return
        self._fed = True
        try:
            out = self._d.process(data, output_buffer_limit=PIECE)
            while True:
                if out:
                    yield out
                # A full piece may leave output pending, and input it could not take yet
                # (can_accept_more_data() is False): both come out of calls without input.
                # A short piece means it ran out of input (or stalls: never loop on nothing).
                if self._d.is_finished() or (
                    len(out) < PIECE and (self._d.can_accept_more_data() or not out)
                ):
                    return
                out = self._d.process(b"", output_buffer_limit=PIECE)
        except brotli.error as exc:
            raise CodingError(f"corrupt compressed body: {exc}") from None

    def finish(self) -> None:
        if self._fed and not self._d.is_finished():
            raise CodingError("truncated compressed body")


def _zstd_decompressor() -> Any:
    assert _zstd is not None
    window = {_zstd.DecompressionParameter.window_log_max: _ZSTD_WINDOW_LOG_MAX}
    return _zstd.ZstdDecompressor(options=window)


def stream_decoder(coding: str) -> Decoder:
    """A decoder for one body in *coding* (gzip, x-gzip, br, zstd or deflate).

    An empty body decodes to nothing whatever the coding. Output comes in bounded pieces:
    the caller decides how much of a body it will hold.
    """
    coding = coding.strip().lower()
    coding = _CODING_ALIASES.get(coding, coding)
    if coding == "gzip":
        return _FramedDecoder(lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))
    if coding == "br":
        return _BrotliDecoder()
    if coding == "zstd" and _zstd is not None:
        return _FramedDecoder(_zstd_decompressor, _zstd_pieces)
    if coding == "deflate":
        return _FramedDecoder(None)
    raise CodingError(f"cannot decode content coding {coding!r}")


def decoded(body: bytes, coding: str) -> Iterator[bytes]:
    """A whole body decoded lazily, in pieces of at most about PIECE bytes; `identity` yields
    it unchanged. CodingError (raised while iterating, or at once for an unknown coding)."""
    if coding.strip().lower() in ("", "identity"):
        return iter((body,) if body else ())
    decoder = stream_decoder(coding)

    def pieces() -> Iterator[bytes]:
        yield from decoder.decompress(body)
        decoder.finish()

    return pieces()


# --- headers -----------------------------------------------------------------------------


def vary_accept_encoding(headers: CIMultiDict[str]) -> None:
    """For an eligible response sent uncompressed: a downstream cache must still keep
    the variants apart, since another request may get a compressed one."""
    append_vary(headers, "Accept-Encoding")


def transformed_headers(headers: Headers, coding: str, new_length: int | None) -> CIMultiDict[str]:
    """A copy of *headers* for the body re-encoded as *coding* ("identity" for decoded).

    Content-Length is set to *new_length* or dropped (streaming). Integrity and range
    headers about the old bytes are dropped. A strong ETag is weakened: the bytes
    differ but the representation is semantically the same (as nginx does); an ETag
    that is not a valid entity-tag is dropped rather than left claiming byte identity.
    """
    out: CIMultiDict[str] = CIMultiDict(headers)
    if coding == "identity":
        out.popall("Content-Encoding", None)
    else:
        out["Content-Encoding"] = coding
    if new_length is None:
        out.popall("Content-Length", None)
    else:
        out["Content-Length"] = str(new_length)
    for name in _INVALIDATED:
        out.popall(name, None)
    append_vary(out, "Accept-Encoding")
    etag = out.get("ETag")
    if etag is not None and not etag.startswith("W/"):
        if etag.startswith('"'):
            out["ETag"] = "W/" + etag
        else:
            out.popall("ETag")
    return out


# --- policy ------------------------------------------------------------------------------


def _available(coding: str) -> bool:
    return coding != "zstd" or _zstd is not None


class CompressionPolicy:
    """Per-route compression decisions; everything configurable is resolved in `__init__`.

    Typical use: `eligible = should_compress(...)`; `coding = negotiate(accept_encoding)`
    if eligible; then `transformed_headers` when coding is set, `vary_accept_encoding`
    when eligible but not compressing.
    """

    __slots__ = (
        "_any_type",
        "_exact",
        "_levels",
        "_min_size",
        "_prefixes",
        "_stream_levels",
        "config",
        "offered",
    )

    transformed_headers = staticmethod(transformed_headers)
    vary_accept_encoding = staticmethod(vary_accept_encoding)

    def __init__(self, config: CompressionConfig) -> None:
        self.config = config
        self.offered: tuple[str, ...] = tuple(c for c in config.algorithms if _available(c))
        self._min_size = config.min_size
        self._any_type = "*/*" in config.types
        self._exact = frozenset(t for t in config.types if not t.endswith("/*"))
        self._prefixes = frozenset(t[:-1] for t in config.types if t.endswith("/*"))  # "text/"
        self._levels = config.level.model_dump()
        self._stream_levels = config.stream_level.model_dump()

    def negotiate(self, accept_encoding: str | None) -> str | None:
        return negotiate(accept_encoding, self.offered)

    def _type_allowed(self, content_type: str | None) -> bool:
        if content_type is None:
            return False  # unknown content may already be compressed (images, archives)
        media = content_type.partition(";")[0].strip().lower()
        if media == "text/event-stream":
            return False  # a buffering compressor would hold events back
        if self._any_type or media in self._exact:
            return True
        slash = media.find("/")
        return slash > 0 and media[: slash + 1] in self._prefixes

    def should_compress(
        self, status: int, response_headers: Headers, body_size: int | None
    ) -> bool:
        """Whether this response may be compressed for a client that accepts it.

        *body_size* None means unknown (streamed); Content-Length is used if present.
        """
        if not self.offered or status < 200 or status in _NO_BODY_STATUSES:
            return False
        if "Content-Range" in response_headers:
            return False
        encoding = response_headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            return False
        if not self._type_allowed(response_headers.get("Content-Type")):
            return False
        for value in response_headers.getall("Cache-Control", ()):
            if "no-transform" in value.lower() and any(
                d.partition("=")[0].strip().lower() == "no-transform" for d in value.split(",")
            ):
                return False
        if body_size is None:
            length = response_headers.get("Content-Length", "").strip()
            body_size = int(length) if length.isdigit() else None
        return body_size is None or body_size >= self._min_size

    def _check(self, coding: str) -> None:
        if coding not in self.offered:
            raise CodingError(f"content coding {coding!r} is not offered by this policy")

    def encode(self, body: bytes, coding: str) -> bytes:
        """Compress a whole body at the stored-variant level."""
        self._check(coding)
        level = self._levels[coding]
        if coding == "gzip":
            return zlib.compress(body, level, wbits=16 + zlib.MAX_WBITS)
        if coding == "br":
            return brotli.compress(body, quality=level)
        return _zstd.compress(body, level=level)  # type: ignore[union-attr]

    def stream_encoder(self, coding: str) -> Encoder:
        """An encoder for one streamed body at the fast level; call `flush()` once at the end."""
        self._check(coding)
        level = self._stream_levels[coding]
        if coding == "gzip":
            return zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        if coding == "br":
            return _BrotliEncoder(level)
        return _zstd.ZstdCompressor(level=level)  # type: ignore[union-attr,no-any-return]
