"""`listen.server_header` as the loader takes it."""

from __future__ import annotations

import pytest

from proxy.config import env
from proxy.config.loader import ConfigError, Settings, parse_config


def _load(listen: str, environ: dict[str, str] | None = None) -> Settings:
    return parse_config(f"upstream: {{url: http://a}}\nlisten: {listen}\n", env=environ or {})


def test_server_header() -> None:
    assert _load("{}").listen.server_header == "cacheproxy"  # no version to look up
    assert _load("{server_header: off}").listen.server_header is False
    assert _load("{server_header: 'Python/3.11 aiohttp/3.14'}").listen.server_header == (
        "Python/3.11 aiohttp/3.14"
    )
    variable = env.variable(("listen", "server_header"))
    assert _load("{}", {variable: "off"}).listen.server_header is False
    for bad in ("true", "''", "' x'", '"a\\r\\nSet-Cookie: x"'):
        with pytest.raises(ConfigError) as caught:
            _load(f"{{server_header: {bad}}}")
        [problem] = caught.value.problems
        assert problem.startswith("listen.server_header: "), problem
