"""Content codings (RFC 9110 §8.4.1): gzip, br and zstd encoders, and decoders for those
and deflate that never hold more than a bounded piece of output.

Synchronous and I/O-free, and no shared state: large bodies can be handed to
`asyncio.to_thread` (zlib, brotli and zstd release the GIL). Decoders never produce more than
`PIECE` bytes at a time: a small body can inflate to gigabytes, and the callers decide how
much of it to hold (see proxy/respond/encoding.py). Which coding, at which level, is the
rules' (rules.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import brotli

from proxy.edge.compression.negotiate import CODING_ALIASES

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
    "Decoder",
    "Encoder",
    "available",
    "decoded",
    "encode",
    "stream_decoder",
    "stream_encoder",
]


class CodingError(ValueError):
    """Unsupported content coding, or a body that does not decode."""


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
    coding = CODING_ALIASES.get(coding, coding)
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


def available(coding: str) -> bool:
    """Whether this process can encode *coding* (zstd is an optional extra)."""
    return coding != "zstd" or _zstd is not None


def encode(body: bytes, coding: str, level: int) -> bytes:
    """A whole body compressed with *coding* (gzip, br or zstd) at *level*."""
    if coding == "gzip":
        return zlib.compress(body, level, wbits=16 + zlib.MAX_WBITS)
    if coding == "br":
        return brotli.compress(body, quality=level)
    return _zstd.compress(body, level=level)


def stream_encoder(coding: str, level: int) -> Encoder:
    """An encoder for one streamed body in *coding* at *level*; `flush()` it once at the end."""
    if coding == "gzip":
        return zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    if coding == "br":
        return _BrotliEncoder(level)
    return _zstd.ZstdCompressor(level=level)
