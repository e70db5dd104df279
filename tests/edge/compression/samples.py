"""A body, compression rules and headers the compression tests share."""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.config.compression import CompressionSettings
from proxy.edge.compression.codecs import decoded
from proxy.edge.compression.rules import CompressionRules

BODY = (
    b'{"items": ['
    + b", ".join(b'{"id": %d, "name": "item %d"}' % (i, i) for i in range(400))
    + b"]}"
)


def decode(body: bytes, coding: str) -> bytes:
    return b"".join(decoded(body, coding))


def make_rules(**kwargs: object) -> CompressionRules:
    return CompressionRules(CompressionSettings.model_validate(kwargs))


def headers(**items: str) -> CIMultiDict[str]:
    return CIMultiDict({k.replace("_", "-"): v for k, v in items.items()})
