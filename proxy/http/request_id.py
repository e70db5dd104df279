"""Request ids: the client's when it is sane, otherwise one made here.

A made id is this process's random prefix (16 bytes, drawn again in a forked child) and a
counter, in hex: unique across processes and instances without a uuid4 per request, which
costs microseconds on a hit that takes about 25.
"""

from __future__ import annotations

import itertools
import os
from contextvars import ContextVar

from multidict import CIMultiDict, CIMultiDictProxy, istr

from proxy.config.request_id import RequestIdSettings

MAX_LENGTH = 128  # longer client ids are replaced: they would bloat every log line

# This request's id, for its access log line (set by the pipeline, read by the observer once
# the response has gone, as metrics.current_route).
current_request_id: ContextVar[str] = ContextVar("cacheproxy_request_id")
# The id an upstream fetch for this request carried, when it is not `current_request_id`'s.
upstream_request_id: ContextVar[str] = ContextVar("cacheproxy_upstream_request_id")


class _Counter:
    """The process's prefix and counter; a forked worker draws a prefix of its own."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(16).hex()
        self.count = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}{next(self.count):012x}"


_COUNTER = _Counter()


def acceptable(value: str) -> bool:
    """Printable, visible ASCII (0x21-0x7e), 1 to MAX_LENGTH characters: safe in a log line
    and a response field, whatever reads them."""
    return (
        0 < len(value) <= MAX_LENGTH
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )


class RequestIds:
    """The ids of one configuration's requests: the header they travel in, and the ids."""

    __slots__ = ("header", "line_prefix", "lower")

    def __init__(self, settings: RequestIdSettings) -> None:
        self.header = istr(settings.header)
        self.lower = settings.header.lower()
        self.line_prefix = f"{settings.header}: "

    @staticmethod
    def new() -> str:
        return _COUNTER.next()

    def accepted(self, headers: CIMultiDict[str] | CIMultiDictProxy[str]) -> str | None:
        """The client's id, when it sent exactly one and it is acceptable; None: make one.
        Two fields could each be read by a different hop as the one id."""
        value = headers.get(self.header)
        if value is None or not acceptable(value) or len(headers.getall(self.header)) > 1:
            return None
        return value
