"""The `upstream:` config section: pool, queue, adaptive limit, retries, circuit breaker.

Its own module so the schema sits next to the behaviour it configures (proxy/upstream/client.py,
proxy/upstream/guard.py), as Kong keeps each plugin's schema beside its handler.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator
from yarl import URL

from proxy.config.cache import parse_size
from proxy.config.durations import Duration
from proxy.config.section import Model, Section


def check_upstream_url(value: str) -> str:
    try:
        url = URL(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    if not url.host:
        raise ValueError(f"has no host: {value!r}")
    if url.query_string or url.fragment:
        raise ValueError(f"must not have a query or fragment: {value!r}")
    return value


class Timeouts(Model):
    connect: Duration = Field(5.0, gt=0)
    read: Duration = Field(30.0, gt=0)
    # The client's whole wait for the upstream's response head: queue, every attempt and
    # the backoff between them. None: queue_timeout + connect + read (one attempt's worst).
    total: Duration | None = Field(None, gt=0)
    # While a request holds a slot, the longest wait for the next chunk of its client's
    # body (one streamed: larger than `buffer_body`, or chunked); then 408.
    client_body: Duration = Field(5.0, gt=0)


class Adaptive(Section):
    """`adaptive: true` (or a mapping) lets the in-flight limit follow upstream latency."""

    min_limit: int = Field(1, ge=1)
    # How much slower than its baseline the upstream may get before the limit falls.
    tolerance: float = Field(1.5, ge=1.0, le=10.0)
    # Seconds of latency samples averaged into one measurement (one limit update).
    window: Duration = Field(0.5, gt=0, le=60)


class PoolSettings(Model):
    # Titled by its key, as before the rename: the schema editors show stays the same.
    model_config = ConfigDict(title="Pool")

    # Per upstream origin and per process: the hard bound on requests in flight.
    max_connections: int = Field(20, ge=1)
    keepalive_timeout: Duration = Field(300.0, ge=0)
    # Requests waiting for a free slot, in arrival order; one more gets 503 upstream_busy.
    max_queue: int = Field(200, ge=0)
    # How long a request may wait for a free slot before it gets a 503.
    queue_timeout: Duration = Field(10.0, gt=0)
    adaptive: Adaptive = Adaptive(enabled=False)

    @model_validator(mode="after")
    def _min_within_max(self) -> PoolSettings:
        if self.adaptive.enabled and self.adaptive.min_limit > self.max_connections:
            raise ValueError(
                f"adaptive.min_limit ({self.adaptive.min_limit}) is above "
                f"max_connections ({self.max_connections})"
            )
        return self


class Retries(Model):
    """An int (the original form) means `{attempts: N}`."""

    # Retries after the first try, for idempotent requests without a streamed body.
    attempts: int = Field(1, ge=0, le=10)
    backoff: Duration = Field(0.1, ge=0, le=60)  # seconds; exponential with full jitter
    max_backoff: Duration = Field(2.0, ge=0, le=300)
    on_status: tuple[int, ...] = (502, 503, 504)
    # Retries at most this share of the requests of the last 10 s...
    budget: float = Field(0.2, ge=0, le=1)
    # ...but always this many per second, so a quiet proxy still retries.
    min_per_second: float = Field(1.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _int_form(cls, data: Any) -> Any:
        if isinstance(data, bool):
            raise ValueError(f"must be a number of retries or a mapping, got {data!r}")
        # A string is fine when it holds a number: `retries: ${RETRIES:-1}` is one.
        if isinstance(data, int) or (isinstance(data, str) and data.strip().isdigit()):
            return {"attempts": data}
        return data

    @field_validator("on_status")
    @classmethod
    def _statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [s for s in value if not 400 <= s <= 599]
        if bad:
            raise ValueError(f"only 4xx and 5xx statuses can be retried, got {bad}")
        return value

    @model_validator(mode="after")
    def _cap_above_base(self) -> Retries:
        if self.max_backoff < self.backoff:
            raise ValueError(
                f"max_backoff ({self.max_backoff:g}) is below backoff ({self.backoff:g})"
            )
        return self


class CircuitBreakerSettings(Section):
    """`circuit_breaker: false` turns it off. Per origin and process (proxy/upstream/breaker.py)."""

    model_config = ConfigDict(title="CircuitBreaker")  # as PoolSettings: the title editors show

    # It opens when, within `window` seconds, at least `min_requests` requests went and at
    # least `failure_rate` of them failed, also without the endpoint that failed most.
    failure_rate: float = Field(0.5, gt=0, le=1)
    min_requests: int = Field(20, ge=1)
    window: Duration = Field(10.0, gt=0, le=3600)
    # Also open on this many failures in a row. Off: a few requests of one client make a
    # row; for an origin too quiet to reach min_requests.
    consecutive_failures: int | None = Field(None, ge=1)
    # Seconds nothing is sent once open; then up to `probes` requests (one per endpoint) go.
    reset_after: Duration = Field(10.0, gt=0)
    probes: int = Field(3, ge=1, le=100)
    # Responses that count as failures, besides connection errors and timeouts. Never a
    # 4xx: that is a response about the request, not a failing upstream.
    on_status: tuple[int, ...] = (502, 503, 504)

    @model_validator(mode="before")
    @classmethod
    def _no_count(cls, data: Any) -> Any:
        # Rejected, not translated: a count of failures is what let a few requests open
        # the circuit for everyone, and no count means the same as a rate.
        if isinstance(data, dict) and "failures" in data:
            raise ValueError(
                "`failures` is gone: the breaker opens on a failure rate now; set "
                "failure_rate (0.5) and min_requests (20), and consecutive_failures for "
                "a count of failures in a row"
            )
        return data

    @field_validator("on_status")
    @classmethod
    def _statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        bad = [s for s in value if not 500 <= s <= 599]
        if bad:
            raise ValueError(
                f"only 5xx statuses can count as failures (a 4xx is the client's), got {bad}"
            )
        return value


class Upstream(Model):
    url: str
    timeouts: Timeouts = Timeouts()
    pool: PoolSettings = PoolSettings()
    retries: Retries = Retries()
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    # Request bodies with a Content-Length up to this are read whole before a slot is
    # taken (and so can be retried); larger or chunked ones stream. 0: every body streams.
    buffer_body: int = Field(64 * 2**10, ge=0, le=2**30)
    # What /health probes: GET this path on the upstream's host (the url's base path is not
    # prepended); a 5xx or no response is "down". None: a TCP connect only.
    health_path: str | None = None
    # Seconds a probe's result is reused, so health checks cannot load the upstream.
    health_cache: Duration = Field(5.0, ge=0, le=300)

    _url = field_validator("url")(check_upstream_url)
    _size = field_validator("buffer_body", mode="before")(parse_size)

    @field_validator("health_path")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or "?" in value or "#" in value):
            raise ValueError(f"must be a path starting with '/', without a query: {value!r}")
        return value

    @property
    def total_timeout(self) -> float:
        t = self.timeouts
        return t.total if t.total is not None else self.pool.queue_timeout + t.connect + t.read
