"""The `upstream:` config section: targets and their balancing, pool, queue, adaptive limit,
retries, circuit breaker, ejection and active health checks.

Its own module so the schema sits next to the behaviour it configures (proxy/upstream/client.py,
proxy/upstream/guard.py), as Kong keeps each plugin's schema beside its handler.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from yarl import URL

from proxy.config.cache import parse_size
from proxy.config.connect import Dns, UpstreamTls
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


class TargetSettings(Model):
    """One upstream target; a string is its `url` with weight 1."""

    url: str = Field(
        description="`http(s)://host[:port][/base]`, the same base path for every target.",
        examples=["http://10.0.0.1:9000"],
    )
    weight: int = Field(
        1,
        ge=1,
        le=1000,
        description="Its share of the requests, relative to the others' weights.",
    )

    _url = field_validator("url")(check_upstream_url)

    @model_validator(mode="before")
    @classmethod
    def _string_form(cls, data: Any) -> Any:
        # Checked here, so that a problem is told at the key the file has.
        return {"url": check_upstream_url(data)} if isinstance(data, str) else data


Balance = Literal["round_robin", "least_request", "consistent_hash"]


class UpstreamTargets(Model):
    """Where an upstream's requests go: `url` (one target) or `targets` (several, balanced)."""

    NAMED_WHEN_MISSING: ClassVar[str] = "url"  # what a missing upstream is told to set

    url: str | None = Field(
        None,
        description="Where requests go: `http(s)://host[:port][/base]`; a base path is "
        "prepended to every forwarded path. One of url and targets is required.",
        examples=["http://127.0.0.1:9000", "https://api.internal:8443/v1"],
    )
    targets: tuple[TargetSettings, ...] = Field(
        (),
        description="Several targets serving the same API, instead of `url`: a list of URLs, "
        "or of {url, weight}. Each has its own pool, queue, circuit breaker and figures.",
        examples=[["http://10.0.0.1:9000", {"url": "http://10.0.0.2:9000", "weight": 2}]],
    )
    balance: Balance = Field(
        "round_robin",
        description="How targets share requests: `round_robin` (smooth, by weight, as "
        "NGINX), `least_request` (the less busy of two picked by weight, as Envoy) or "
        "`consistent_hash` (by the request's path and query: each target caches its own "
        "share, and a target that goes out moves only its share).",
    )
    host: str | None = Field(
        None,
        description="The Host header sent to every target, and the host cached entries are "
        "keyed by. None: each target's own host[:port]; entries are keyed by the first "
        "target's, so set it when the first may change.",
        examples=["api.internal"],
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_upstream_url(value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and (
            not value or any(c in value for c in "/?#@ \t\r\n") or not value.isprintable()
        ):
            raise ValueError(f"must be host or host:port, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> UpstreamTargets:
        if self.url is not None and self.targets:
            raise ValueError("give `url` or `targets`, not both")
        if self.url is None and not self.targets:
            raise ValueError("`url` or `targets` is required")
        if self.targets:
            first = URL(self.targets[0].url)
            seen: dict[str, int] = {}
            for i, target in enumerate(self.targets):
                u = URL(target.url)
                if u.raw_path.rstrip("/") != first.raw_path.rstrip("/"):
                    raise ValueError(
                        f"targets[{i}] has the base path {u.raw_path!r}, targets[0] "
                        f"{first.raw_path!r}: every target serves the same API"
                    )
                origin = f"{u.scheme}://{u.host}:{u.port}".lower()
                if origin in seen:
                    raise ValueError(
                        f"targets[{i}] is targets[{seen[origin]}] again: give it a weight instead"
                    )
                seen[origin] = i
        return self

    @property
    def target_list(self) -> tuple[TargetSettings, ...]:
        """Every target; `url` is one of weight 1."""
        if self.url is not None:
            return (TargetSettings(url=self.url),)
        return self.targets

    @property
    def urls(self) -> str:
        """The targets' URLs for a log line (redact before showing)."""
        return ", ".join(t.url for t in self.target_list)


class Ejection(Section):
    """Passive health (Envoy's outlier detection): a target that keeps failing is left out
    of its upstream's balancing for a while. `false` turns it off."""

    consecutive_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failures in a row (no connection, a timeout, a status in "
        "circuit_breaker.on_status) that take a target out.",
    )
    base_time: Duration = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds out the first time; n times this the n-th time in a row (one "
        "fewer for each base_time it then stays in). Back in, one failure takes it out again.",
        examples=[30, "10s"],
    )
    max_time: Duration = Field(
        300.0,
        gt=0,
        le=86400,
        description="Seconds out at most, however often it failed.",
        examples=[300, "5m"],
    )
    max_percent: int = Field(
        50,
        ge=0,
        le=100,
        description="At most this share of an upstream's targets is left out (at least one "
        "of two or more); more out, by ejection, health check or open circuit, and requests "
        "go to every target as if none were (Envoy's panic mode).",
    )

    @model_validator(mode="after")
    def _max_above_base(self) -> Ejection:
        if self.max_time < self.base_time:
            raise ValueError(
                f"max_time ({self.max_time:g}) is below base_time ({self.base_time:g})"
            )
        return self


class HealthCheck(Section):
    """Active health checks of each target of an upstream with several: `true` or a
    mapping turns them on."""

    path: str | None = Field(
        None,
        description="GET this path on each target (the url's base path is not prepended); "
        "a 5xx, no response or a timeout fails. None: upstream.health_path, or a TCP connect "
        "when that is none too.",
        examples=["/health"],
    )
    interval: Duration = Field(
        10.0,
        ge=1,
        le=3600,
        description="Seconds between checks of one target, each jittered by up to 15% (and "
        "the first at a random point of the first interval), so instances and workers do "
        "not probe in step: a target gets about workers x instances checks per interval.",
        examples=[10, "30s"],
    )
    timeout: Duration = Field(
        2.0,
        gt=0,
        le=60,
        description="Seconds a check may take; then it failed.",
        examples=[2, "500ms"],
    )
    unhealthy_threshold: int = Field(
        3, ge=1, le=100, description="Failed checks in a row that take a target out."
    )
    healthy_threshold: int = Field(
        2, ge=1, le=100, description="Passed checks in a row that bring it back."
    )

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or "?" in value or "#" in value):
            raise ValueError(f"must be a path starting with '/', without a query: {value!r}")
        return value

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> HealthCheck:
        if self.timeout >= self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}) must be below interval ({self.interval:g})"
            )
        return self


class Timeouts(Model):
    connect: Duration = Field(
        5.0, gt=0, description="Seconds to open a connection.", examples=[5, "500ms"]
    )
    read: Duration = Field(
        30.0,
        gt=0,
        description="Seconds of silence from the upstream before a 504.",
        examples=[30, "2m"],
    )
    total: Duration | None = Field(
        None,
        gt=0,
        description="Seconds a client waits for the upstream's response head in all: the "
        "queue, every attempt and the backoff between them; no retry starts that would end "
        "past it. Not for requests with a streamed body. None: pool.queue_timeout + connect "
        "+ read (one attempt's worst).",
        examples=[45, "1m"],
    )
    client_body: Duration = Field(
        5.0,
        gt=0,
        description="While a request holds an upstream slot, the longest wait in seconds for "
        "the next chunk of its streamed body (larger than `buffer_body`, or chunked); then 408.",
        examples=[5, "10s"],
    )


class Adaptive(Section):
    """`adaptive: true` (or a mapping) lets the in-flight limit follow upstream latency."""

    min_limit: int = Field(
        1, ge=1, description="The in-flight limit never falls below this (at most max_connections)."
    )
    tolerance: float = Field(
        1.5,
        ge=1.0,
        le=10.0,
        description="How many times slower than its baseline the upstream may get before the "
        "limit falls (1 to 10).",
    )
    window: Duration = Field(
        0.5,
        gt=0,
        le=60,
        description="Seconds of latency samples averaged into one measurement, one limit update.",
        examples=[0.5, "500ms"],
    )


class PoolSettings(Model):
    # Titled by its key, as before the rename: the schema editors show stays the same.
    model_config = ConfigDict(title="Pool")

    max_connections: int = Field(
        20,
        ge=1,
        description="Requests in flight to each upstream origin, per process, at most: the "
        "hard bound.",
    )
    keepalive_timeout: Duration = Field(
        300.0,
        ge=0,
        description="Seconds an idle pooled connection is kept; 0: no keep-alive.",
        examples=[300, "5m"],
    )
    max_queue: int = Field(
        200,
        ge=0,
        description="Requests waiting for a free slot, in arrival order; one more gets 503 "
        "upstream_busy at once. 0: no waiting.",
    )
    queue_timeout: Duration = Field(
        10.0,
        gt=0,
        description="Seconds a request may wait for a free slot; then 503 upstream_busy.",
        examples=[10, "2s"],
    )
    adaptive: Adaptive = Field(
        Adaptive(enabled=False),
        description="`true` or a mapping: the in-flight limit follows the upstream's latency, "
        "between min_limit and max_connections; `false`: a fixed max_connections.",
        examples=[True, {"min_limit": 2, "tolerance": 2.0}],
    )

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

    attempts: int = Field(
        1,
        ge=0,
        le=10,
        description="Retries after the first try, for idempotent requests without a "
        "streamed body (POST and PATCH never are); 0: none.",
    )
    backoff: Duration = Field(
        0.1,
        ge=0,
        le=60,
        description="Seconds: the n-th retry waits a random time up to backoff x 2^n "
        "(exponential, full jitter).",
        examples=[0.1, "100ms"],
    )
    max_backoff: Duration = Field(
        2.0,
        ge=0,
        le=300,
        description="Seconds a retry waits at most; not below backoff.",
        examples=[2, "5s"],
    )
    on_status: tuple[int, ...] = Field(
        (502, 503, 504),
        description="Upstream statuses (4xx or 5xx) retried; connection failures always are.",
    )
    budget: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Retries at most this share of the requests of the last 10 s, so "
        "retries cannot storm a failing upstream...",
    )
    min_per_second: float = Field(
        1.0,
        ge=0,
        description="...but always this many per second, so a quiet proxy still retries.",
    )

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

    failure_rate: float = Field(
        0.5,
        gt=0,
        le=1,
        description="It opens when at least this share of at least `min_requests` requests "
        "within `window` seconds failed, also without the endpoint that failed most.",
    )
    min_requests: int = Field(
        20, ge=1, description="Fewer requests within the window: the rate is not judged."
    )
    window: Duration = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds of requests the failure rate is measured over.",
        examples=[10, "30s"],
    )
    consecutive_failures: int | None = Field(
        None,
        ge=1,
        description="Also open on this many failures in a row, for an origin too quiet to "
        "reach min_requests; none: off, since a few requests of one client make a row.",
        examples=[10],
    )
    reset_after: Duration = Field(
        10.0,
        gt=0,
        description="Seconds nothing is sent once open (stale entries answer); then `probes` "
        "requests try it.",
        examples=[10, "1m"],
    )
    probes: int = Field(
        3,
        ge=1,
        le=100,
        description="Requests, one per endpoint, let through to test an open circuit; one "
        "success closes it.",
    )
    # Never a 4xx: that is a response about the request, not a failing upstream.
    on_status: tuple[int, ...] = Field(
        (502, 503, 504),
        description="5xx statuses that count as failures, besides connection errors and "
        "timeouts (a 4xx never does).",
    )

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


class Upstream(UpstreamTargets):
    timeouts: Timeouts = Field(Timeouts(), description="Seconds the upstream may take.")
    pool: PoolSettings = Field(
        PoolSettings(),
        description="Connections and the queue for them, per upstream target (upstream's "
        "and each route's own) and per process.",
    )
    retries: Retries = Field(
        Retries(),
        description="Retries of failed idempotent requests; an int N means {attempts: N}.",
        examples=[1, {"attempts": 2, "backoff": "200ms"}],
    )
    circuit_breaker: CircuitBreakerSettings = Field(
        CircuitBreakerSettings(),
        description="Stop sending to an upstream target that keeps failing; `false` turns it off.",
    )
    ejection: Ejection = Field(
        Ejection(),
        description="Leave out of the balancing, for a while, a target that keeps failing "
        "(upstreams with several targets); `false` turns it off.",
        examples=[{"consecutive_failures": 3, "base_time": "10s"}],
    )
    health_check: HealthCheck = Field(
        HealthCheck(enabled=False),
        description="Probe each target of upstreams with several, and leave out those that "
        "fail; `true` or a mapping turns it on.",
        examples=[True, {"path": "/health", "interval": "5s"}],
    )
    dns: Dns = Field(
        Dns(),
        description="How long the upstream hosts' addresses are kept (their records' TTL, "
        "within bounds) and which name servers are asked.",
        examples=[{"min_ttl": "1s", "max_ttl": "5m", "nameservers": ["10.0.0.2"]}],
    )
    tls: UpstreamTls = Field(
        UpstreamTls(),
        description="For https upstreams (upstream.url and routes' own): the CAs trusted, a "
        "client certificate for mutual TLS, the name checked.",
        examples=[{"ca_file": "/etc/cacheproxy/ca.pem", "cert_file": "/etc/cacheproxy/client.pem"}],
    )
    buffer_body: int = Field(
        64 * 2**10,
        ge=0,
        le=2**30,
        description="Request bodies with a Content-Length up to this many bytes are read "
        "whole before an upstream slot is taken (and so can be retried); larger or chunked "
        "ones stream. 0: every body streams. Memory: up to this x listen.max_connections.",
        examples=["64KB", "1MB", 0],
    )
    health_path: str | None = Field(
        None,
        description="What /health probes: GET this path on the upstream's host (the url's "
        "base path is not prepended); a 5xx or no response is down. None: a TCP connect only.",
        examples=["/health"],
    )
    health_cache: Duration = Field(
        5.0,
        ge=0,
        le=300,
        description="Seconds a probe's result is reused, so health checks cannot load the "
        "upstream.",
        examples=[5, "30s"],
    )

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
