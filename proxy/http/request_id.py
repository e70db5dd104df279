"""Request ids: the client's when it is sane, otherwise one made here.

A made id is this process's random prefix (16 bytes in hex, drawn again in a forked child),
a dash and a counter in decimal: unique across processes and instances without a uuid4 per
request, which costs microseconds on a hit that takes about 25 (the counter's decimal digits
cost a fifth of a zero-padded hex field's: `str` of an int is the cheapest formatting).
"""

from __future__ import annotations

import itertools
import os
from contextvars import ContextVar

from multidict import CIMultiDict, CIMultiDictProxy, istr

from proxy.config.request_id import RequestIdSettings

MAX_LENGTH = 128  # longer client ids are replaced: they would bloat every log line

# The id an upstream fetch for this request carried, when it is not `current_request_id`'s.
upstream_request_id: ContextVar[str] = ContextVar("cacheproxy_upstream_request_id")


class _Counter:
    """The process's prefix and counter; a forked worker draws a prefix of its own."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(16).hex() + "-"
        self.count = itertools.count(1)

    def next(self) -> str:
        return self.prefix + str(next(self.count))


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

    __slots__ = ("header", "line_prefix", "lower", "made")

    def __init__(self, settings: RequestIdSettings) -> None:
        self.made = _COUNTER  # the process's: the pipeline writes `next` out on its hot path
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
