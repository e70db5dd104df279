"""The `tracing:` section: OpenTelemetry spans exported over OTLP/HTTP (proxy/observe/tracing/
records them). Absent: no tracing, and opentelemetry is never imported."""

from __future__ import annotations

from importlib import metadata

from pydantic import Field, SecretStr, field_validator, model_validator
from yarl import URL

from proxy.config.cors import HeaderName
from proxy.config.durations import Duration
from proxy.config.section import Model

INSTALL = "pip install 'cacheproxy[otel]'"
# The `otel` extra's distributions: the tracing code imports all three.
EXTRA = ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http")


def extra_installed() -> bool:
    """Whether the `otel` extra is installed, asked of the packages' metadata: importing
    them (or finding their modules, which imports the parents) costs check-config time."""
    try:
        for name in EXTRA:
            metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


class TracingSettings(Model):
    endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces",
        description="Where spans go: an OTLP/HTTP (protobuf) traces endpoint, a collector's "
        "or an agent's.",
        examples=["http://otel-collector:4318/v1/traces"],
    )
    sample_ratio: float = Field(
        0.01,
        ge=0,
        le=1,
        description="The share of requests traced among those without a sampled "
        "`traceparent`; a request whose `traceparent` is sampled is traced (its trace "
        "continues, or is linked on a caching route).",
        examples=[0.01, 1],
    )
    service_name: str = Field(
        "cacheproxy", min_length=1, description="The spans' `service.name` resource attribute."
    )
    headers: dict[HeaderName, SecretStr] = Field(
        {},
        description="Sent with every export (an API key, a tenant): secrets, never logged nor "
        "shown.",
        examples=[{"Authorization": "Bearer ${OTEL_TOKEN}"}],
    )
    timeout: Duration = Field(
        10.0, gt=0, le=300, description="How long one export may take before it is given up."
    )
    max_queue_size: int = Field(
        2048,
        ge=1,
        le=1_000_000,
        description="Spans waiting to be exported; past it new spans are dropped, never a "
        "request slowed.",
    )
    max_export_batch_size: int = Field(
        512, ge=1, le=100_000, description="Spans sent in one export, at most."
    )
    export_interval: Duration = Field(
        5.0, gt=0, le=300, description="Time between exports of what is waiting."
    )

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @model_validator(mode="after")
    def _batch_fits(self) -> TracingSettings:
        if self.max_export_batch_size > self.max_queue_size:
            raise ValueError("max_export_batch_size must not exceed max_queue_size")
        if not extra_installed():
            raise ValueError(f"tracing needs the OpenTelemetry packages: {INSTALL}")
        return self
