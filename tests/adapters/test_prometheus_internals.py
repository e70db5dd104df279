"""The contract with prometheus_client's internals (proxy/adapters/prometheus_internals.py), on
the installed version: values written with its per-process value class read back, in their
multiprocess modes, through its public MultiProcessCollector."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.adapters.prometheus_internals import go_float, process_value_class


def fixed_pid(pid: int) -> Callable[[], int]:
    """A process identifier that always says `pid`: one made-up process's files."""
    return lambda: pid


def test_values_written_per_process_are_read_back_by_the_public_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for pid, value in ((4101, 3.0), (4102, 4.0)):
        value_class = process_value_class(fixed_pid(pid))
        counter = value_class(
            "counter", "t_requests", "t_requests_total", ("route",), ("a",), "requests"
        )
        counter.set(value)
        gauge = value_class(
            "gauge", "t_bytes", "t_bytes", ("route",), ("a",), "bytes", multiprocess_mode="livemax"
        )
        gauge.set(value * 10)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("t_requests_total", {"route": "a"}) == 7.0  # summed
    assert registry.get_sample_value("t_bytes", {"route": "a"}) == 40.0  # the largest
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "counter_4101.db",
        "counter_4102.db",
        "gauge_livemax_4101.db",
        "gauge_livemax_4102.db",
    ]


def test_bucket_bounds_are_written_as_prometheus_client_writes_them() -> None:
    assert [go_float(b) for b in (0.00025, 0.005, 1.0, 10.0)] == ["0.00025", "0.005", "1.0", "10.0"]
    assert go_float(math.inf) == "+Inf"
