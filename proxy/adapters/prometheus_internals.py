"""prometheus_client's internals that `workers: N` relies on, named once.

Workers write their series into prometheus_client's per-process files (observe/metrics.py,
`MultiprocessWriter`) with the value class its own metrics use in multiprocess mode,
`values.MultiProcessValue`, which is not exported: a factory of classes built as
`(typ, metric_name, name, labelnames, labelvalues, help_text, multiprocess_mode=...)` with a
`set(value)`, the same in every release from 0.20 to 0.26.0 (the tested version). The bucket
bounds are written with `utils.floatToGoString`, as its histograms write theirs, so the `le`
labels agree. pyproject.toml pins prometheus_client to the tested minor; tests/adapters/
writes through these and reads the result back with the public MultiProcessCollector.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from prometheus_client.utils import floatToGoString
from prometheus_client.values import MultiProcessValue

# A Prometheus float as Go prints it ("0.005", "+Inf"): histogram `le` labels.
go_float: Callable[[float], str] = floatToGoString


class ProcessValue(Protocol):
    """One series' value in this process's mmap files: what the proxy calls of it."""

    def set(self, value: float) -> None: ...


def process_value_class(process_identifier: Callable[[], int]) -> Callable[..., ProcessValue]:
    """The class whose instances are one series' value in this process's mmap files."""
    return MultiProcessValue(process_identifier)
