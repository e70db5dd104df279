"""Which responses a route compresses, with which codings, at which levels: the `compression:`
section (proxy/config/compression.py) resolved once per route into a `CompressionRules`.
Pure: the codings come from codecs.py, the client's choice from negotiate.py.
"""

from __future__ import annotations

from multidict import istr

from proxy.config.compression import CompressionSettings
from proxy.edge.compression.codecs import CodingError, Encoder, available, encode, stream_encoder
from proxy.edge.compression.negotiate import negotiate
from proxy.http.headers import Headers

__all__ = ["CompressionRules"]

# Content types whose answer is remembered, per route: an origin sends a handful, none long.
_TYPES_KEPT = 256
_TYPE_KEPT_MAX = 128
# No transformation for these: nothing to compress, or the byte range/partial content
# refers to the identity representation.
_NO_BODY_STATUSES = frozenset({204, 206, 304})
# Looked up as istr: a str name is case-folded on every lookup (half the lookup's cost).
_CONTENT_RANGE, _CONTENT_ENCODING = istr("Content-Range"), istr("Content-Encoding")
_CONTENT_TYPE, _CACHE_CONTROL = istr("Content-Type"), istr("Cache-Control")
_CONTENT_LENGTH = istr("Content-Length")


class CompressionRules:
    """Per-route compression decisions; everything configurable is resolved in `__init__`.

    Typical use: `eligible = should_compress(...)`; `coding = negotiate(accept_encoding)`
    if eligible; then `transformed_headers` (headers.py) when coding is set,
    `vary_accept_encoding` when eligible but not compressing.
    """

    __slots__ = (
        "_any_type",
        "_exact",
        "_levels",
        "_min_size",
        "_prefixes",
        "_stream_levels",
        "_types",
        "config",
        "offered",
    )

    def __init__(self, config: CompressionSettings) -> None:
        self.config = config
        self.offered: tuple[str, ...] = tuple(c for c in config.algorithms if available(c))
        self._min_size = config.min_size
        self._any_type = "*/*" in config.types
        self._exact = frozenset(t for t in config.types if not t.endswith("/*"))
        self._prefixes = frozenset(t[:-1] for t in config.types if t.endswith("/*"))  # "text/"
        self._types: dict[str, bool] = {}  # _type_allowed's answers, by Content-Type
        self._levels = config.level.model_dump()
        self._stream_levels = config.stream_level.model_dump()

    def negotiate(self, accept_encoding: str | None) -> str | None:
        return negotiate(accept_encoding, self.offered)

    def _type_allowed(self, content_type: str) -> bool:
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
        if _CONTENT_RANGE in response_headers:
            return False
        encoding = response_headers.get(_CONTENT_ENCODING, "").strip().lower()
        if encoding not in ("", "identity"):
            return False
        content_type = response_headers.get(_CONTENT_TYPE)
        if content_type is None:
            return False  # unknown content may already be compressed (images, archives)
        # Looked up: parsing the same Content-Type again cost about as much as the rest.
        allowed = self._types.get(content_type)
        if allowed is None:
            allowed = self._type_allowed(content_type)
            if len(self._types) < _TYPES_KEPT and len(content_type) <= _TYPE_KEPT_MAX:
                self._types[content_type] = allowed
        if not allowed:
            return False
        for value in response_headers.getall(_CACHE_CONTROL, ()):
            if "no-transform" in value.lower() and any(
                d.partition("=")[0].strip().lower() == "no-transform" for d in value.split(",")
            ):
                return False
        if body_size is None:
            length = response_headers.get(_CONTENT_LENGTH, "").strip()
            body_size = int(length) if length.isdigit() else None
        return body_size is None or body_size >= self._min_size

    def _check(self, coding: str) -> None:
        if coding not in self.offered:
            raise CodingError(f"content coding {coding!r} is not offered by these rules")

    def encode(self, body: bytes, coding: str) -> bytes:
        """Compress a whole body at the stored-variant level."""
        self._check(coding)
        return encode(body, coding, self._levels[coding])

    def stream_encoder(self, coding: str) -> Encoder:
        """An encoder for one streamed body at the fast level; call `flush()` once at the end."""
        self._check(coding)
        return stream_encoder(coding, self._stream_levels[coding])
