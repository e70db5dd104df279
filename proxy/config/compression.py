"""The `compression:` section, top level or per route; negotiation, codecs and rules are in
proxy/edge/compression/."""

from __future__ import annotations

import importlib.util
import re
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field

from proxy.config.section import Model, Section


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


# The standard library's zstd (Python 3.14) or its backport, which
# proxy/edge/compression/codecs.py imports; looked up, not imported, so that loading a config
# loads no codec.
ZSTD_INSTALLED = _installed("compression.zstd") or _installed("backports.zstd")

ALGORITHMS = ("br", "zstd", "gzip")  # also the default server preference
_MEDIA_RANGE_RE = re.compile(r"[a-z0-9!#$&^_.+-]+/(?:\*|[a-z0-9!#$&^_.+-]+)|\*/\*")


def _check_algorithm(value: str) -> str:
    name = value.strip().lower()
    if name == "deflate":
        raise ValueError(
            "deflate is not supported: clients disagree on its framing (zlib or raw); use gzip"
        )
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {value!r}: expected br, zstd or gzip")
    if name == "zstd" and not ZSTD_INSTALLED:
        raise ValueError(
            "zstd needs the optional 'backports.zstd' package (pip install 'cacheproxy[zstd]')"
        )
    return name


def _check_media_range(value: str) -> str:
    media = value.strip().lower()
    if not _MEDIA_RANGE_RE.fullmatch(media):
        raise ValueError(f"invalid media type {value!r}: expected type/subtype or type/*")
    return media


Algorithm = Annotated[str, AfterValidator(_check_algorithm)]
MediaRange = Annotated[str, AfterValidator(_check_media_range)]


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(values)) != len(values):
        raise ValueError("an algorithm is listed twice")
    return values


class Levels(Model):
    """Levels for stored variants: made once, served many times, so spend CPU."""

    gzip: int = Field(default=6, ge=1, le=9, description="gzip level, 1 (fast) to 9 (small).")
    br: int = Field(default=5, ge=0, le=11, description="Brotli level, 0 (fast) to 11 (small).")
    # Above 19 zstd's window exceeds the 8 MiB browsers accept for Content-Encoding.
    zstd: int = Field(default=3, ge=1, le=19, description="zstd level, 1 (fast) to 19 (small).")


class StreamLevels(Levels):
    """Levels for on-the-fly compression of uncacheable responses: latency first."""

    gzip: int = Field(default=1, ge=1, le=9, description="gzip level, 1 (fast) to 9 (small).")
    br: int = Field(default=1, ge=0, le=11, description="Brotli level, 0 (fast) to 11 (small).")
    zstd: int = Field(default=1, ge=1, le=19, description="zstd level, 1 (fast) to 19 (small).")


class CompressionSettings(Section):
    """`compression:` block. `algorithms` order is the server's preference on q ties."""

    # The published schema keeps the name editors already know.
    model_config = ConfigDict(title="CompressionConfig")

    algorithms: Annotated[tuple[Algorithm, ...], AfterValidator(_unique)] = Field(
        ("br", "gzip"),
        description="Encodings offered, in the server's order of preference when a client "
        "likes several equally: br, zstd (`pip install 'cacheproxy[zstd]'`), gzip; deflate "
        "is never used.",
        examples=[["br", "zstd", "gzip"]],
    )
    min_size: int = Field(
        default=1000, ge=0, description="Bytes: smaller responses are sent as they are."
    )
    types: tuple[MediaRange, ...] = Field(
        (
            "text/*",
            "application/json",
            "application/javascript",
            "application/xml",
            "image/svg+xml",
        ),
        description="Media types compressed, `type/subtype` or `type/*`.",
        examples=[["application/json", "text/*"]],
    )
    level: Levels = Field(
        Levels(), description="Levels for stored variants: made once per cached entry."
    )
    stream_level: StreamLevels = Field(
        StreamLevels(),
        description="Levels for uncacheable responses, compressed while they stream.",
    )
