"""Fixtures the compression tests share."""

from __future__ import annotations

import pytest

from proxy.config import compression as compression_settings
from proxy.edge.compression import codecs
from proxy.edge.compression.rules import CompressionRules
from tests.edge.compression.samples import make_rules


@pytest.fixture
def rules() -> CompressionRules:
    return make_rules(algorithms=["br", "gzip"], level={"gzip": 9}, stream_level={"br": 0})


@pytest.fixture
def no_zstd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as if the optional zstd package were not installed."""
    monkeypatch.setattr(compression_settings, "ZSTD_INSTALLED", False)
    monkeypatch.setattr(codecs, "_zstd", None)
