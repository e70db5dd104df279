"""Two connections joined byte for byte after a 101: the client's and the upstream's.

Nothing is parsed: what one side sends is written to the other as it arrives. Each direction
holds at most WRITE_BUFFER bytes plus one read: when the side written to stops taking bytes
(its transport's buffer is past the mark), reading from the other side pauses until it drains,
so a client that does not read slows its upstream down instead of filling this process's
memory, and the other way round. A tunnel ends when either side closes (the other is closed
once what is left for it is sent, or CLOSE_LINGER seconds have passed), when no byte has
passed either way for the route's idle timeout, or when the shutdown grace is over.
"""

from __future__ import annotations

import asyncio

from proxy.adapters.aiohttp_internals import Connection
from proxy.observe.tunnels import TunnelCounts

WRITE_BUFFER = 64 * 1024  # each side's write buffer high-water mark
CLOSE_LINGER = 5.0  # seconds a side may take to read what was left for it before it is cut


class Tunnel:
    """One switched connection; the client's side is `client` (aiohttp's protocol)."""

    def __init__(
        self,
        client: Connection,
        upstream: asyncio.Transport,
        idle_timeout: float,
        counts: TunnelCounts,
    ) -> None:
        assert client.transport is not None
        self.loop = asyncio.get_running_loop()
        self._client = client
        self._client_transport = client.transport
        self._upstream = upstream
        self._idle_timeout = idle_timeout
        self._counts = counts
        self._ended: asyncio.Future[str] = self.loop.create_future()
        self._last_io = self.loop.time()
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, tail: bytes) -> str:
        """Join the two until the tunnel ends; why it did (observe/tunnels.CLOSE_REASONS).
        `tail`: what the upstream sent after its 101's head, the client's first bytes."""
        self._upstream.set_protocol(_UpstreamSide(self))
        for transport in (self._upstream, self._client_transport):
            transport.set_write_buffer_limits(high=WRITE_BUFFER)
        if tail:
            self._to_client(tail)
        self._upstream.resume_reading()  # paused since the 101 (upstream/http1.py)
        # Feeds what the client sent after its head, first; and pauses the upstream again
        # at once if the client's transport is full already.
        self._client.take_over(self)
        if not self._ended.done():
            self._timer = self.loop.call_at(self._last_io + self._idle_timeout, self._check_idle)
        try:
            return await asyncio.shield(self._ended)
        except asyncio.CancelledError:
            self.end("shutdown")  # the listener cuts what is left when the grace is over
            raise

    # --- the client's side (aiohttp_internals.TunnelEnd) --------------------------------------

    def received(self, data: bytes) -> None:
        if self._ended.done():
            return
        self._upstream.write(data)
        self._counts.to_upstream += len(data)
        self._last_io = self.loop.time()

    def writing(self, paused: bool) -> None:
        """The client stopped (or resumed) taking bytes: so does reading from the upstream."""
        if self._ended.done():
            return
        if paused:
            self._upstream.pause_reading()
        else:
            self._upstream.resume_reading()

    def end(self, reason: str) -> None:
        """Close both sides, once; `reason` is counted."""
        if self._ended.done():
            return
        self._ended.set_result(reason)
        self._counts.closed[reason] = self._counts.closed.get(reason, 0) + 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = reason == "shutdown"  # the process is leaving: nothing more is waited for
        for transport in (self._client_transport, self._upstream):
            if now:
                transport.abort()
                continue
            transport.close()  # what is buffered goes first
            if transport.get_write_buffer_size():
                self.loop.call_later(CLOSE_LINGER, transport.abort)

    # --- the upstream's side ------------------------------------------------------------------

    def _to_client(self, data: bytes) -> None:
        if self._ended.done():
            return
        self._client_transport.write(data)
        self._counts.to_client += len(data)
        self._last_io = self.loop.time()

    def _upstream_writing(self, paused: bool) -> None:
        """The upstream stopped (or resumed) taking bytes: so does reading from the client."""
        if self._ended.done():
            return
        if paused:
            self._client.pause_reading()
        else:
            self._client.resume_reading()

    def _check_idle(self) -> None:
        """Lazy: re-armed for the newest deadline, not once per byte."""
        self._timer = None
        if self._ended.done():
            return
        deadline = self._last_io + self._idle_timeout
        if self.loop.time() >= deadline:
            self.end("idle_timeout")
        else:
            self._timer = self.loop.call_at(deadline, self._check_idle)


class _UpstreamSide(asyncio.Protocol):
    """The upstream connection's protocol once switched."""

    def __init__(self, tunnel: Tunnel) -> None:
        self._tunnel = tunnel

    def data_received(self, data: bytes) -> None:
        self._tunnel._to_client(data)

    def eof_received(self) -> bool:
        return False  # the upstream is done sending: close (RFC 6455 closes the TCP too)

    def connection_lost(self, exc: Exception | None) -> None:
        self._tunnel.end("upstream")

    def pause_writing(self) -> None:
        self._tunnel._upstream_writing(True)

    def resume_writing(self) -> None:
        self._tunnel._upstream_writing(False)
