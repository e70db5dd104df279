"""The `compression:` section's validation (proxy/config/compression.py): pure, no sockets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.config.compression import CompressionSettings


def test_defaults() -> None:
    config = CompressionSettings()
    assert config.algorithms == ("br", "gzip")
    assert config.min_size == 1000
    assert (config.level.gzip, config.level.br, config.level.zstd) == (6, 5, 3)
    assert (config.stream_level.gzip, config.stream_level.br, config.stream_level.zstd) == (1, 1, 1)


def test_partial_levels_keep_their_own_defaults() -> None:
    config = CompressionSettings.model_validate({"level": {"br": 9}, "stream_level": {"gzip": 2}})
    assert (config.level.gzip, config.level.br) == (6, 9)
    assert (config.stream_level.gzip, config.stream_level.br) == (2, 1)


@pytest.mark.parametrize(
    ("data", "loc", "message"),
    [
        ({"algorithms": ["br", "deflate"]}, ("algorithms", 1), "deflate is not supported"),
        ({"algorithms": ["lz4"]}, ("algorithms", 0), "unknown algorithm"),
        ({"algorithms": ["gzip", "GZIP"]}, ("algorithms",), "listed twice"),
        ({"types": ["application/json", "json"]}, ("types", 1), "invalid media type"),
        ({"min_size": -1}, ("min_size",), "greater than or equal"),
        ({"level": {"gzip": 10}}, ("level", "gzip"), "less than or equal"),
        ({"level": {"br": 12}}, ("level", "br"), "less than or equal"),
        ({"stream_level": {"zstd": 20}}, ("stream_level", "zstd"), "less than or equal"),
        ({"level": {"lzma": 1}}, ("level", "lzma"), "Extra inputs"),
        ({"algorithm": ["gzip"]}, ("algorithm",), "Extra inputs"),
    ],
)
def test_config_errors_name_the_key(
    data: dict[str, object], loc: tuple[object, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        CompressionSettings.model_validate(data)
    error = info.value.errors()[0]
    assert error["loc"] == loc
    assert message in error["msg"]


def test_config_normalizes_case() -> None:
    config = CompressionSettings(algorithms=["GZip"], types=["Text/*", "APPLICATION/JSON"])
    assert config.algorithms == ("gzip",)
    assert config.types == ("text/*", "application/json")
