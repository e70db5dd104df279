"""The `tracing:` section: its checks, its secrets, and the `otel` extra it needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import tracing
from proxy.config.loader import ConfigError, parse_config
from tests.conftest import ROOT

BASE = "upstream: {url: 'http://127.0.0.1:9'}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + text, env={})
    return caught.value.problems


def test_absent_means_no_tracing_and_an_empty_section_takes_the_defaults() -> None:
    assert parse_config(BASE, env={}).tracing is None
    tracing = parse_config(BASE + "tracing: {}\n", env={}).tracing
    assert tracing is not None
    assert tracing.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert (tracing.sample_ratio, tracing.service_name) == (0.01, "cacheproxy")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("tracing: {sample_ratio: 1.5}", "tracing.sample_ratio"),
        ("tracing: {sample_ratio: -0.1}", "tracing.sample_ratio"),
        ("tracing: {endpoint: 'collector:4318'}", "tracing.endpoint"),
        ("tracing: {timeout: 0}", "tracing.timeout"),
        ("tracing: {max_queue_size: 0}", "tracing.max_queue_size"),
        ("tracing: {max_queue_size: 10, max_export_batch_size: 20}", "tracing"),
        ("tracing: {headers: {'bad name': x}}", "tracing.headers"),
    ],
)
def test_bad_values_are_refused_naming_their_key(text: str, where: str) -> None:
    [problem] = problems(text + "\n")
    assert problem.startswith(where), problem


def test_exporter_headers_are_never_shown() -> None:
    text = "tracing: {headers: {Authorization: 'Bearer s3cr3t-collector-key'}}\n"
    tracing = parse_config(BASE + text, env={}).tracing
    assert tracing is not None
    assert tracing.headers["Authorization"].get_secret_value() == "Bearer s3cr3t-collector-key"
    assert "s3cr3t" not in repr(tracing) and "s3cr3t" not in str(tracing.model_dump())


def test_without_the_otel_extra_the_section_is_an_error_naming_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if the SDK were not installed: a distribution of that name is not.
    monkeypatch.setattr(tracing, "EXTRA", (*tracing.EXTRA, "opentelemetry-sdk-uninstalled"))
    [problem] = problems("tracing: {sample_ratio: 1}\n")
    assert problem.startswith("tracing")
    assert "pip install 'cacheproxy[otel]'" in problem
    assert parse_config(BASE, env={}).tracing is None  # without the section: nothing needed


# Loads what `run` loads, and checks a file with a tracing section, then lists what came in.
PROBE = """
import sys
import proxy.cli, proxy.server.app, proxy.server.worker, proxy.server.supervisor
from proxy.config.loader import load_config
assert load_config(sys.argv[1]).tracing is not None
print("\\n".join(sys.modules))
"""


def test_opentelemetry_is_imported_only_when_tracing_is_configured(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(BASE + "tracing: {sample_ratio: 0.5}\n")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = done.stdout.split()
    assert "proxy.server.app" in loaded
    # redis-py imports opentelemetry's metrics API and SDK when they are installed (for its
    # own optional metrics): what must stay out is the tracing SDK, its exporter and ours.
    tracing_modules = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "google.protobuf")
    assert [m for m in loaded if m.startswith(tracing_modules)] == []
    assert "proxy.observe.tracing.otel" not in loaded
