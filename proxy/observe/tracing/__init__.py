"""OpenTelemetry tracing, when the `tracing:` section is configured.

Nothing here imports opentelemetry: `load` does, so a proxy without the section (or without
the `otel` extra) never pays for it. The tracing itself is otel.py's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.config.tracing import TracingSettings
    from proxy.observe.tracing.otel import Tracing


def load(settings: TracingSettings) -> Tracing:
    """The tracer for `settings`: its spans go to the section's OTLP/HTTP endpoint."""
    from proxy.observe.tracing.otel import Tracing

    return Tracing(settings)
