"""The purge log: every purge kept in a Redis stream, so that no instance misses one.

Pub/sub alone loses what is published while an instance is not subscribed, and the only
safe response to that was to drop the whole memory tier on every reconnection: when Redis
restarted, every instance did so in the same second, and the upstream took every hot key
at once. With the log an instance reads, on reconnection (and every few seconds, and when
woken by a message), what was purged since the last entry it applied, and applies exactly
that.

    <prefix>{purges}           stream, MAXLEN `redis.purge_log_length`; fields: from, kind
                               (url | prefix | tag | all | anchor), value, and soft ("1")
                               on a soft purge
    <prefix>{purges}:lineage   a random token made with the log: a new one means Redis lost
                               the log (a restart without persistence, a flush)

Continuity is proven, not assumed: a read starts at the last entry applied, inclusive
(XRANGE); if that entry is still there, nothing after it can have gone (the log is only
trimmed from its head). If it is gone, either the log was trimmed past it (the instance
fell more than `purge_log_length` purges behind) or Redis lost the log. Then:

- Redis lost the log (new lineage) and this instance had been following until shortly
  before (`TRUST` seconds): whatever it may have missed was purged just before the loss,
  and each instance sends its own purges of the last `REPLAY_WINDOW` seconds again when it
  sees the lineage change, so reading the new log from its start is enough. A Redis
  restart under load thus costs no instance its memory tier.
- Otherwise it cannot know what it missed: every memory entry is marked for revalidation
  (MemoryStore.mark_all), not dropped, so each key goes upstream as a conditional request
  when it is next asked for, spread over time by traffic.

Purges made while Redis cannot be reached are applied here at once and queued (`Outbox`,
bounded by `purge_log_length`; past that, the queue becomes one "all" purge: every
instance revalidates everything), and sent, Redis side included, when it responds again.

The wake-up messages stay on pub/sub (`<prefix>purge`, with the entry's id): losing one
costs at most one poll interval. They also carry the purge itself, as before the log
existed, so instances of an older version still apply purges made by newer ones.

A soft purge is marked by a field (and a key in the wake-up) of its own, not by a kind: an
instance of a version that knows no soft purges reads it as the purge it knows, removing
what it would have marked stale, rather than skipping it as an unknown kind. Entries
without the field are hard purges, as they always were.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

REPLAY_WINDOW = 60.0  # seconds: own purges sent again when Redis lost the log
# Deaf for longer than this, an instance cannot rely on the others' replays: what it missed
# may predate their windows. (The margin covers the poll interval and how late a dead
# connection is noticed.)
TRUST = REPLAY_WINDOW - 15.0
PAGE = 1000  # entries per read

Kind = Literal["url", "prefix", "tag", "all"]
Action = Literal["apply", "read_all", "mark"]


@dataclass(frozen=True, slots=True)
class Purge:
    kind: str  # Kind, or "anchor" (an entry that purges nothing: something to point at)
    value: str
    soft: bool = False  # mark stale instead of removing (MemoryStore.purge_url ...)


ALL = Purge("all", "")
ANCHOR = Purge("anchor", "")


def after_gap(lineage_changed: bool, deaf_for: float) -> Action:
    """What to do when the entry last applied is no longer in the log."""
    if lineage_changed and deaf_for <= TRUST:
        return "read_all"  # a fresh log after a loss: the others replay what it lacks
    return "mark"  # trimmed past us, or deaf too long: we cannot know what we missed


def newer(a: str, b: str | None) -> bool:
    """Is stream id `a` after `b`?"""
    if b is None:
        return True
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) > (int(bms), int(bseq or 0))


class Outbox:
    """Purges waiting for Redis, oldest first, each once; bounded: past `limit` they
    become one purge of everything (no purge is ever dropped)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._queue: OrderedDict[Purge, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, purge: Purge) -> None:
        if ALL in self._queue:
            return  # already purging everything
        self._queue[purge] = None
        if len(self._queue) > self.limit:
            self._queue.clear()
            self._queue[ALL] = None

    def first(self) -> Purge | None:
        return next(iter(self._queue), None)

    def done(self, purge: Purge) -> None:
        self._queue.pop(purge, None)


class Recent:
    """This instance's own purges as they entered the log, for replay after a loss."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._purges: deque[tuple[float, Purge]] = deque(maxlen=limit)

    def add(self, purge: Purge) -> None:
        self._purges.append((self._clock(), purge))

    def since(self, moment: float) -> list[Purge]:
        return list(dict.fromkeys(p for at, p in self._purges if at >= moment))


def fields(purge: Purge, instance: str) -> dict[str, bytes]:
    out = {"from": instance.encode(), "kind": purge.kind.encode(), "value": _bytes(purge.value)}
    if purge.soft:
        out["soft"] = b"1"
    return out


def parse(raw: dict[Any, Any]) -> tuple[str, Purge] | None:
    """(from, purge) of a log entry's fields, or None when they are not ours."""
    try:
        sender, kind, value = raw[b"from"], raw[b"kind"], raw[b"value"]
        purge = Purge(
            kind.decode(), value.decode("utf-8", "surrogateescape"), raw.get(b"soft") == b"1"
        )
        return sender.decode(), purge
    except (KeyError, AttributeError, UnicodeDecodeError):
        return None


def message(purge: Purge, instance: str, entry_id: str | None) -> bytes | None:
    """The pub/sub wake-up for a logged purge (None when its value cannot be JSON)."""
    body: dict[str, str | bool] = {"from": instance, "kind": purge.kind, "value": purge.value}
    if purge.soft:
        body["soft"] = True
    if entry_id is not None:
        body["id"] = entry_id
    try:
        return orjson.dumps(body)
    except TypeError:  # a value with lone surrogates: the log alone carries it
        return None


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
