"""The `cors:` section's validation (proxy/config/cors.py): pure, no sockets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.config.cors import CorsSettings

APP = "https://app.example.com"


@pytest.mark.parametrize("field", ["allow_origins", "allow_headers", "allow_methods"])
def test_wildcard_with_credentials_is_a_config_error(field: str) -> None:
    with pytest.raises(ValidationError, match="allow_credentials") as info:
        CorsSettings.model_validate({field: ["*"], "allow_credentials": True})
    assert field in str(info.value)


def test_wildcard_without_credentials_is_fine() -> None:
    config = CorsSettings(allow_origins=["*"], allow_headers=["*"])
    assert config.allow_origins == ("*",)


@pytest.mark.parametrize(
    "origin",
    [
        "app.example.com",
        "https://app.example.com/",
        "https://app.example.com/path",
        "https://",
        "https://app.example.com:99999",
        "https://*.[::1]",
        "https://a.*.example.com",
        "null",
        "",
    ],
)
def test_malformed_origin_is_a_config_error_with_its_index(origin: str) -> None:
    with pytest.raises(ValidationError) as info:
        CorsSettings(allow_origins=[APP, origin])
    error = info.value.errors()[0]
    assert error["loc"] == ("allow_origins", 1)
    assert "invalid origin" in error["msg"]


def test_invalid_regex_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="invalid regular expression") as info:
        CorsSettings(allow_origin_regex=["https://(unclosed"])
    assert info.value.errors()[0]["loc"] == ("allow_origin_regex", 0)


def test_unknown_key_and_bad_header_name_are_config_errors() -> None:
    with pytest.raises(ValidationError, match="extra"):
        CorsSettings.model_validate({"allow_origin": [APP]})
    with pytest.raises(ValidationError, match="not an HTTP token"):
        CorsSettings(allow_headers=["Bad Header"])
    with pytest.raises(ValidationError):
        CorsSettings(max_age=-1)


def test_config_normalizes_origins_and_methods() -> None:
    config = CorsSettings(
        allow_origins=["HTTPS://App.Example.COM:443", "http://x.test:80", "http://x.test:8080"],
        allow_methods=["get", "Patch"],
    )
    assert config.allow_origins == (
        "https://app.example.com",
        "http://x.test",
        "http://x.test:8080",
    )
    assert config.allow_methods == ("GET", "PATCH")


def test_config_is_frozen() -> None:
    config = CorsSettings(allow_origins=[APP])
    with pytest.raises(ValidationError):
        config.max_age = 5  # type: ignore[misc]  # frozen: the point of the test
