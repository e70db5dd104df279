"""Logging: the process's log format and level (the `log:` section), and the access log.

The access log is one line per response on stdout. The request path only appends a tuple to
a bounded list (a cache hit that sampling skips not even that); every 0.2 s the list goes
to a writer thread, which formats and writes the lines. A stdout nobody reads therefore
never blocks a request: when the writer falls behind, lines are dropped and counted
(`cacheproxy_access_log_dropped_total`).

Nothing secret is written: no header values, and of the query only the parameters listed
in `log.query_params` (query strings often carry API keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sys
import threading
from datetime import UTC, datetime
from math import floor
from typing import IO, Any

import orjson

from proxy.config.logs import LogSettings
from proxy.http.clientaddr import TrustedProxies, client_address


def iso_time(seconds: float) -> str:
    """`2024-05-01T12:00:00.123Z`: UTC, milliseconds."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a record's `fields` extra (a dict) is merged in."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(settings: LogSettings, level: str | None = None) -> None:
    """The root logger as `log:` says (`level`, from the command line, wins)."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or settings.level).upper())


# time, method, raw path, route, status, cache result, upstream s (or None), total s, bytes
# sent, peer, with trusted proxies the X-Forwarded-For and Forwarded lines, the request id
# and the upstream fetch's when it differs (None: ids are off, or the same). Plain values
# only: holding requests and responses until the writer is done with them costs more (the
# garbage collector keeps walking them) than copying these few fields.
Record = tuple[
    float,
    str,
    str,
    str,
    int,
    str,
    float | None,
    float,
    int,
    str | None,
    tuple[str, ...],
    tuple[str, ...],
    str | None,
    str | None,
]


# ".000Z" .. ".999Z", and the fraction of a millisecond count as Python writes a float
# (".0", ".5", ".25", ".125"): the writer thread's text, made once instead of per line.
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))
_FRACTIONS = tuple(f".{n:03d}".rstrip("0") if n else ".0" for n in range(1000))
_EXACT_BELOW = 10**15  # microseconds: below this, us / 1000 has fewer than 16 digits
# Whole milliseconds below a second, and statuses, as text: formatting an int costs more.
_WHOLE = tuple(str(n) for n in range(1000))
_STATUS = {status: str(status) for status in range(100, 1000)}


def ms_text(seconds: float) -> str:
    """`str(int(seconds * 1e6) / 1000)`: milliseconds with up to three decimals, as the
    access log has always written them, without formatting a float (a third of a line's cost).

    A decimal of fewer than 16 significant digits is what its nearest float prints as, so
    the integer's digits are that float's text.
    """
    us = int(seconds * 1e6)
    if 0 <= us < _EXACT_BELOW:
        whole, fraction = divmod(us, 1000)
        return f"{whole}{_FRACTIONS[fraction]}"
    return str(us / 1000)


def loggable_path(raw: str, keep: frozenset[str]) -> str:
    """The path, with only the query parameters named in `keep` (as sent, undecoded)."""
    path, sep, query = raw.partition("?")
    if not sep or not keep:
        return path
    kept = [p for p in query.split("&") if p.partition("=")[0] in keep]
    return f"{path}?{'&'.join(kept)}" if kept else path


class AccessLog:
    """Bounded, asynchronous access log lines: `add` on the loop, writing in a thread."""

    FLUSH_EVERY = 0.2  # seconds a line may wait in the loop before going to the writer

    def __init__(
        self,
        settings: LogSettings,
        stream: IO[bytes],
        trusted: TrustedProxies,
        max_pending: int = 10_000,
        max_batches: int = 8,
    ) -> None:
        self.sample_hits = settings.sample_hits
        self.json = settings.format == "json"
        self.trusted = trusted
        self._dropped = 0  # lines the loop could not hand over (buffer or queue full)
        self._failed = 0  # lines the writer could not write (stdout closed or broken)
        self.written = 0
        self._keep = frozenset(settings.query_params)
        self._stream = stream
        self._max_pending = max_pending
        self._pending: list[Record] = []
        self._hit_credit = 0.0
        self._batches: queue.Queue[list[Record] | None] = queue.Queue(max_batches)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._second = self._milli = -1  # the writer thread's cache for _time
        self._second_text = self._milli_text = ""

    @property
    def trusted(self) -> TrustedProxies:
        return self._trusted

    @trusted.setter
    def trusted(self, proxies: TrustedProxies) -> None:
        self._trusted = proxies
        # Asked here, not for every line: TrustedProxies.__bool__ is a Python call.
        self._trusting = bool(proxies)

    @property
    def dropped(self) -> int:
        """Lines lost: each counter has one writer (the loop, the thread), so none is lost."""
        return self._dropped + self._failed

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._write_batches, name="access-log", daemon=True)
        self._thread.start()

    def close(self, wait: float = 2.0) -> None:
        """Write what is pending (up to `wait` seconds), then stop the writer."""
        if self._thread is None:
            return
        self._flush()
        with contextlib.suppress(queue.Full):
            self._batches.put(None, timeout=wait)
        self._thread.join(wait)
        self._thread = None

    # --- on the event loop --------------------------------------------------------------

    def hit_sampled(self) -> bool:
        """Whether to log this cache hit: `sample_hits` of them, evenly spread."""
        credit = self._hit_credit + self.sample_hits
        if credit >= 1.0:
            self._hit_credit = credit - 1.0
            return True
        self._hit_credit = credit
        return False

    def add(self, record: Record) -> None:
        pending = self._pending
        if len(pending) >= self._max_pending:
            self._dropped += 1
            return
        if not pending and self._loop is not None:
            self._loop.call_later(self.FLUSH_EVERY, self._flush)
        pending.append(record)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self._batches.put_nowait(batch)
        except queue.Full:  # the writer is stuck (stdout not read): never wait for it
            self._dropped += len(batch)

    # --- in the writer thread ------------------------------------------------------------

    def _write_batches(self) -> None:
        while (batch := self._batches.get()) is not None:
            if self.json:
                line = self._json
                data = b"".join([line(r) for r in batch])
            else:  # one encode per batch, not per line
                data = self.texts(batch).encode()
            try:
                self._stream.write(data)
                self._stream.flush()
                self.written += len(batch)
            except (OSError, ValueError):  # closed or broken stdout: count, carry on
                self._failed += len(batch)

    def line(self, r: Record) -> bytes:
        """One line, as written (with its newline)."""
        return self.text(r).encode() if not self.json else self._json(r)

    def _json(self, r: Record) -> bytes:
        (
            when,
            method,
            raw,
            route,
            status,
            cache,
            upstream,
            total,
            size,
            peer,
            xff,
            fwd,
            rid,
            up_rid,
        ) = r
        client = client_address(peer, xff, fwd, self._trusted) if self._trusting else peer
        path = loggable_path(raw, self._keep) if self._keep else raw.partition("?")[0]
        # Microsecond precision, shown in ms (int() is cheaper than round() here).
        up_ms = None if upstream is None else int(upstream * 1e6) / 1000
        total_ms = int(total * 1e6) / 1000
        doc = {
            "time": self._time(when),
            "client": client,
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "cache": cache,
            "bytes": size,
            "upstream_ms": up_ms,
            "total_ms": total_ms,
        }
        if rid is not None:  # checked printable ASCII, or made here: safe as it is
            doc["request_id"] = rid
            if up_rid is not None:
                doc["upstream_request_id"] = up_rid
        return orjson.dumps(doc) + b"\n"

    def text(self, r: Record) -> str:
        """A line of the text format, as a str."""
        return self.texts([r])

    def texts(self, batch: list[Record]) -> str:
        """The text format's lines of `batch`, joined: one frame for the whole batch, its
        tables and settings read once (a call per line was a third of a line's cost)."""
        keep, trusting, trusted = self._keep, self._trusting, self._trusted
        fractions, whole, statuses = _FRACTIONS, _WHOLE, _STATUS
        second, milli = self._second, self._milli
        second_text, milli_text = self._second_text, self._milli_text
        lines = []
        for (
            when,
            method,
            raw,
            route,
            status,
            cache,
            upstream,
            total,
            size,
            peer,
            xff,
            fwd,
            rid,
            up_rid,
        ) in batch:
            client = client_address(peer, xff, fwd, trusted) if trusting else peer
            path = loggable_path(raw, keep) if keep else raw.partition("?")[0]
            if not path.isprintable() or '"' in path or "\\" in path:
                path = orjson.dumps(path).decode()[1:-1]  # quoted below; else as orjson has it
            # iso_time(when), made once per millisecond (_time, written out here).
            ms = floor(when * 1000) if when >= 0 else int(when * 1000)
            if ms != milli:
                milli = ms
                s, m = divmod(ms, 1000)
                if s != second:
                    second = s
                    second_text = iso_time(s)[:-5]  # without ".000Z"
                milli_text = second_text + _MILLIS[m]
            # ms_text(total) and ms_text(upstream), written out below a second (most of
            # them): its whole milliseconds and fraction looked up, no int formatted, no
            # call. floor(), not int(), where they agree (from 0 up): int() of a float is a
            # type call.
            us = floor(total * 1e6) if total >= 0 else -1
            total_ms = (
                whole[us // 1000] + fractions[us % 1000] if 0 <= us < 10**6 else ms_text(total)
            )
            if upstream is None:
                up_ms = "-"
            else:
                us = floor(upstream * 1e6) if upstream >= 0 else -1
                up_ms = (
                    whole[us // 1000] + fractions[us % 1000]
                    if 0 <= us < 10**6
                    else ms_text(upstream)
                )
            if rid is None:
                ids = ""
            elif up_rid is None:
                ids = f" request_id={rid}"
            else:
                ids = f" request_id={rid} upstream_request_id={up_rid}"
            code = statuses.get(status) or status
            lines.append(
                f'{milli_text} {client or "-"} {method} "{path}" {code} {size}B cache={cache} '
                f"route={route} total_ms={total_ms} upstream_ms={up_ms}{ids}\n"
            )
        self._second, self._milli = second, milli
        self._second_text, self._milli_text = second_text, milli_text
        return "".join(lines)

    def _time(self, when: float) -> str:
        """iso_time(when), made once per millisecond: lines come in bursts."""
        milli = floor(when * 1000) if when >= 0 else int(when * 1000)
        if milli != self._milli:
            second, ms = divmod(milli, 1000)
            if second != self._second:
                self._second = second
                self._second_text = iso_time(second)[:-5]  # without ".000Z"
            self._milli = milli
            self._milli_text = self._second_text + _MILLIS[ms]
        return self._milli_text
