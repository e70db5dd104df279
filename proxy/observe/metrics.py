"""Prometheus metrics: plain counters on the request path, prometheus_client at scrape time.

prometheus_client takes a lock per update and ~2 µs per histogram observation, more than
a memory hit may spend on all its accounting. So the request path bumps plain integers in
a `RouteMeter` built per route at start-up, and the numbers become metric families only
when something reads them:

- one process: `Exporter.collector()` builds the families at each scrape of `/metrics`;
- `workers: N` (PROMETHEUS_MULTIPROC_DIR set): `MultiprocessWriter` copies every value into
  prometheus_client's per-process files once a second, and the process serving the admin
  port renders all of them with `render_multiprocess(dir)`.

Labels are route names and closed sets (cache results, methods the parser knows, three
digit statuses), never raw paths, so the number of series is bounded.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from operator import add
from typing import Literal

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.adapters.prometheus_internals import ProcessValue, go_float, process_value_class
from proxy.cache.status import LABELS
from proxy.observe.stats_window import BOUNDS, BUCKETS, PROM_BOUNDS, Totals

# What the pipeline tells the observer of a request, on the request itself: its route's name
# once routed, and its id (request ids on). A request's own state, not a ContextVar: a
# ContextVar.set allocates a context node and a token on every request (callgrind: about 5k
# instructions of a 180k hit each, garbage collection included).
ROUTE = web.RequestKey("cacheproxy_route", str)
REQUEST_ID = web.RequestKey("cacheproxy_request_id", str)
# Seconds until the upstream's response head arrived, for this request's access log line.
upstream_seconds: ContextVar[float] = ContextVar("cacheproxy_upstream_seconds")

UNROUTED = "unrouted"  # requests refused before a route was chosen (400, 403, 421)
CACHE_RESULTS = tuple(LABELS.values())  # hit, stale, miss, revalidated, bypass
CACHE_LABELS = (*CACHE_RESULTS, "none")  # none: the proxy responded without the cache stage
# A response's cache label (CacheOutcome.label), set by whoever made it; a prepared response
# carries its own (`cache_result`).
CACHE_RESULT = web.ResponseKey("cache_result", str)
# A 101's seconds switched: aiohttp observes a tunnel's response when it closes, hours later
# perhaps, which no latency figure should hold, so they are taken out of its time.
TUNNELLED = web.ResponseKey("tunnelled", float)
_CACHED = frozenset({"hit", "stale"})
_UNCACHED = frozenset({"miss", "revalidated", "bypass"})
_LOOKUP_METHODS = frozenset({"GET", "HEAD"})
_STATUS_TEXT: dict[int | str, str] = {status: str(status) for status in range(100, 1000)}

# Fine bucket i -> Prometheus bucket (the last one is +Inf). Every Prometheus bound is a fine
# bound (stats_window inserts them), so each Prometheus bucket is a run of whole fine buckets.
assert set(PROM_BOUNDS) <= set(BOUNDS)
_TO_PROM = (*(bisect_left(PROM_BOUNDS, b) for b in BOUNDS), len(PROM_BOUNDS))
_PROM_RUNS = tuple(
    slice(_TO_PROM.index(p), len(_TO_PROM) - _TO_PROM[::-1].index(p))
    for p in range(len(PROM_BOUNDS) + 1)
)
_LE = (*(go_float(b) for b in PROM_BOUNDS), "+Inf")


class Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS  # per bucket of stats_window.BOUNDS, not cumulative
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.total += seconds

    def coarse(self) -> list[int]:
        """Counts per Prometheus bucket, not cumulative."""
        counts = self.counts
        return [sum(counts[run]) for run in _PROM_RUNS]


class RouteMeter:
    """One route's counters; created at start-up, bumped by the request path."""

    __slots__ = (
        "caching",
        "durations",
        "failed_seconds",
        "name",
        "ratelimit",
        "responses",
        "upstream",
        "upstream_durations",
    )

    def __init__(self, name: str, caching: bool) -> None:
        self.name = name
        self.caching = caching  # GET/HEAD responses on this route are cache lookups
        self.responses: dict[tuple[str, int, str], int] = {}  # (method, status, cache)
        self.durations = {label: Histogram() for label in CACHE_LABELS}
        # Seconds spent on 5xx responses, by cache label (their count is in `responses`):
        # taken out of the uncached average, which is what the upstream costs when it answers.
        self.failed_seconds: dict[str, float] = {}
        self.upstream: dict[str, int] = {}  # status, or "error" / "timeout"
        self.upstream_durations = Histogram()
        self.ratelimit = [0, 0]  # allowed, limited


# One series of one metric family: its kind, name, help, label names and values by label
# values (a histogram's value: counts per PROM_BOUNDS bucket, not cumulative, and the sum).
HistogramValue = tuple[list[int], float]
Samples = dict[tuple[str, ...], float | HistogramValue]
# How a gauge's values in several workers make the machine's: `sum` for amounts (bytes,
# connections, requests queued), `max` for the worst of them (the oldest wait, a circuit
# open in any worker), `min` for the least. Counters and histograms always add up.
AcrossWorkers = Literal["sum", "max", "min"]


@dataclass
class Series:
    kind: Literal["counter", "gauge", "histogram"]
    name: str  # without _total
    help: str
    labels: tuple[str, ...] = ()
    values: Samples = field(default_factory=dict)
    across_workers: AcrossWorkers | None = None  # every gauge says, and only gauges

    def __post_init__(self) -> None:
        if (self.kind == "gauge") != (self.across_workers is not None):
            raise ValueError(f"{self.name}: a gauge, and only a gauge, says across_workers")


class Meters:
    """Every route's meter, by route name, plus the hot-path entry points."""

    def __init__(self, routes: Iterable[tuple[str, bool]]) -> None:
        self.by_route: dict[str, RouteMeter] = {}
        for name, caching in routes:
            # Two routes with one name share a meter: labels are names.
            meter = self.by_route.get(name)
            self.by_route[name] = RouteMeter(name, caching or bool(meter and meter.caching))
        self.unrouted = self.by_route.setdefault(UNROUTED, RouteMeter(UNROUTED, False))

    def response(self, route: str, method: str, status: int, cache: str, seconds: float) -> None:
        meter = self.by_route.get(route) or self.unrouted
        key = (method, status, cache)
        responses = meter.responses
        responses[key] = responses.get(key, 0) + 1
        hist = meter.durations[cache]
        hist.counts[bisect_left(BOUNDS, seconds)] += 1
        hist.total += seconds
        if status >= 500:
            failed = meter.failed_seconds
            failed[cache] = failed.get(cache, 0.0) + seconds

    def upstream(self, route: str, outcome: int | str, seconds: float) -> None:
        meter = self.by_route.get(route) or self.unrouted
        key = _STATUS_TEXT.get(outcome) or str(outcome)  # str() of an int is a type call
        meter.upstream[key] = meter.upstream.get(key, 0) + 1
        meter.upstream_durations.observe(seconds)

    def ratelimit_check(self, route: str, allowed: bool) -> None:
        """For the rate-limit stage: one call per check (`allowed` False: refused with 429)."""
        meter = self.by_route.get(route) or self.unrouted
        meter.ratelimit[0 if allowed else 1] += 1

    # --- reading ----------------------------------------------------------------------

    def lookups(self) -> dict[tuple[str, str], int]:
        """(route, result) -> cache lookups: GET/HEAD responses on caching routes."""
        out: dict[tuple[str, str], int] = {}
        for meter in self.by_route.values():
            if not meter.caching:
                continue
            for result in CACHE_RESULTS:
                out[(meter.name, result)] = 0
            for (method, _, cache), count in meter.responses.items():
                if method in _LOOKUP_METHODS and cache != "none":
                    out[(meter.name, cache)] += count
        return out

    def totals(self) -> Totals:
        """Everything so far, summed over routes: what the rolling window is made of."""
        requests = hits = misses = errors = cached = uncached = failed = 0
        cached_s = uncached_s = failed_s = 0.0
        up_requests = up_errors = limited = 0
        latency: list[int] | None = None
        for meter in self.by_route.values():
            by_cache: dict[str, int] = {}  # each response bumped one duration histogram
            failed_by_cache: dict[str, int] = {}
            for (method, status, cache), count in meter.responses.items():
                requests += count
                by_cache[cache] = by_cache.get(cache, 0) + count
                if status >= 500:
                    errors += count
                    failed_by_cache[cache] = failed_by_cache.get(cache, 0) + count
                if meter.caching and method in _LOOKUP_METHODS:
                    if cache in _CACHED:
                        hits += count
                    elif cache in ("miss", "revalidated"):
                        misses += count
            # Once a second over 822 buckets: only the histograms that counted something, in C.
            for cache, n in by_cache.items():
                hist = meter.durations[cache]
                if cache in _CACHED:
                    cached, cached_s = cached + n, cached_s + hist.total
                elif cache in _UNCACHED:
                    n_failed = failed_by_cache.get(cache, 0)
                    seconds_failed = meter.failed_seconds.get(cache, 0.0)
                    uncached += n - n_failed
                    uncached_s += max(hist.total - seconds_failed, 0.0) if n > n_failed else 0.0
                    failed, failed_s = failed + n_failed, failed_s + seconds_failed
                counts = hist.counts
                latency = counts.copy() if latency is None else list(map(add, latency, counts))
            for outcome, count in meter.upstream.items():
                up_requests += count
                if outcome == "aborted":  # the client's body stalled or broke off
                    continue
                if not outcome.isdigit() or int(outcome) >= 500:
                    up_errors += count
            limited += meter.ratelimit[1]
        return Totals(
            requests=requests,
            hits=hits,
            misses=misses,
            errors=errors,
            cached=cached,
            cached_seconds=cached_s,
            uncached=uncached,
            uncached_seconds=uncached_s,
            failed=failed,
            failed_seconds=failed_s,
            upstream_requests=up_requests,
            upstream_errors=up_errors,
            rate_limited=limited,
            latency=(0,) * BUCKETS if latency is None else tuple(latency),
        )

    def series(self) -> list[Series]:
        requests = Series(
            "counter",
            "cacheproxy_requests",
            "Requests answered on the proxy port",
            ("route", "method", "status"),
        )
        durations = Series(
            "histogram",
            "cacheproxy_request_duration_seconds",
            "Time from a request's head to the last byte of its answer",
            ("route", "cache"),
        )
        upstream = Series(
            "counter",
            "cacheproxy_upstream_requests",
            "Requests sent upstream, by the status answered (error, timeout: none came; "
            "aborted: the client's body stalled or broke off)",
            ("route", "status"),
        )
        up_durations = Series(
            "histogram",
            "cacheproxy_upstream_duration_seconds",
            "Time from sending a request upstream to its response head",
            ("route",),
        )
        ratelimit = Series(
            "counter",
            "cacheproxy_ratelimit_checks",
            "Rate-limit checks, allowed or limited (answered 429)",
            ("route", "result"),
        )
        lookups = Series(
            "counter",
            "cacheproxy_cache_lookups",
            "GET/HEAD requests on caching routes, by what the cache did",
            ("route", "result"),
        )
        for name, meter in self.by_route.items():
            by_status: dict[tuple[str, ...], int] = {}
            for (method, status, _), count in meter.responses.items():
                key = (name, method, str(status))
                by_status[key] = by_status.get(key, 0) + count
            requests.values.update(by_status)
            for cache, hist in meter.durations.items():
                if hist.total or any(hist.counts):
                    durations.values[(name, cache)] = (hist.coarse(), hist.total)
            for outcome, count in meter.upstream.items():
                upstream.values[(name, outcome)] = count
            if meter.upstream:
                hist = meter.upstream_durations
                up_durations.values[(name,)] = (hist.coarse(), hist.total)
            if any(meter.ratelimit):
                ratelimit.values[(name, "allowed")] = meter.ratelimit[0]
                ratelimit.values[(name, "limited")] = meter.ratelimit[1]
        lookups.values.update({k: v for k, v in self.lookups().items()})
        return [requests, durations, lookups, upstream, up_durations, ratelimit]


# --- rendering ------------------------------------------------------------------------------


def families(all_series: Iterable[Series]) -> Iterator[Metric]:
    for s in all_series:
        if s.kind == "histogram":
            hist_family = HistogramMetricFamily(s.name, s.help, labels=s.labels)
            for labels, value in s.values.items():
                assert isinstance(value, tuple)
                counts, total = value
                cumulative, acc = [], 0
                for le, count in zip(_LE, counts, strict=True):
                    acc += count
                    cumulative.append((le, acc))
                hist_family.add_metric(list(labels), cumulative, total)
            yield hist_family
            continue
        family: CounterMetricFamily | GaugeMetricFamily
        if s.kind == "counter":
            family = CounterMetricFamily(s.name, s.help, labels=s.labels)
        else:
            family = GaugeMetricFamily(s.name, s.help, labels=s.labels)
        for labels, value in s.values.items():
            assert not isinstance(value, tuple)
            family.add_metric(list(labels), value)
        yield family


class Exporter:
    """A prometheus_client collector over `collect()`, which returns every series now."""

    def __init__(self, collect: Callable[[], list[Series]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        return families(self._collect())

    def registry(self) -> CollectorRegistry:
        from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(standard)
        return registry


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory workers write their metrics to, when the supervisor set one."""
    return os.environ.get(MULTIPROC_ENV) or None


class MultiprocessWriter:
    """Copies a process's series into prometheus_client's per-process files (mmap).

    Values are written whole (not as increments), so a missed write is caught up by the
    next. Counters and histograms of exited workers stay counted; gauges are written in the
    `live` mode of their `across_workers` (`livesum`, `livemax`, `livemin`), dropped when the
    supervisor calls `worker_exited`.
    """

    def __init__(self, process_identifier: Callable[[], int] = os.getpid) -> None:
        if multiprocess_dir() is None:
            raise RuntimeError(f"{MULTIPROC_ENV} is not set")
        self._value_class = process_value_class(process_identifier)
        self._values: dict[tuple[str, str, tuple[str, ...]], ProcessValue] = {}
        self._written: dict[tuple[str, str, tuple[str, ...]], float] = {}

    def _set(
        self,
        s: Series,
        sample: str,
        names: tuple[str, ...],
        values: tuple[str, ...],
        value: float,
    ) -> None:
        key = (s.name, sample, values)
        if self._written.get(key) == value:
            return
        holder = self._values.get(key)
        if holder is None:
            mode = f"live{s.across_workers}" if s.across_workers else ""  # a gauge's only
            holder = self._values[key] = self._value_class(
                s.kind, s.name, sample, names, values, s.help, multiprocess_mode=mode
            )
        holder.set(value)
        self._written[key] = value

    def write(self, all_series: Iterable[Series]) -> None:
        for s in all_series:
            for labels, value in s.values.items():
                if s.kind == "histogram":
                    assert isinstance(value, tuple)
                    counts, total = value
                    names = (*s.labels, "le")
                    for le, count in zip(_LE, counts, strict=True):
                        self._set(s, s.name + "_bucket", names, (*labels, le), count)
                    self._set(s, s.name + "_sum", s.labels, labels, total)
                else:
                    assert not isinstance(value, tuple)
                    sample = s.name + "_total" if s.kind == "counter" else s.name
                    self._set(s, sample, s.labels, labels, value)


def multiprocess_registry(path: str) -> CollectorRegistry:
    """Every worker's metrics, read from the files in `path` at each collection."""
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=path)
    return registry


def render_multiprocess(path: str) -> bytes:
    """`/metrics` for every worker writing to `path`: for the process serving the admin port
    (or `prometheus_client.aiohttp.make_aiohttp_handler(multiprocess_registry(path))`)."""
    return generate_latest(multiprocess_registry(path))


def worker_exited(pid: int, path: str) -> None:
    """A worker is gone: its gauges (cache bytes, connections) no longer count."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, path)
