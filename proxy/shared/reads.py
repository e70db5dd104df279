"""The L2 lookup's MGET over connections of our own, its reply parsed by hiredis.

redis-py spends about 270k instructions of its own on one MGET (bench.callgrind: its command
layer with retry and observability hooks, a pool behind a lock, a timer around every read):
more than the rest of an L2 hit. These connections do one thing: send a packed MGET and hand
its reply back, or fail by a deadline the caller gives (the guard's: RedisGuard.run_until).
About 20k instructions a read.

Only for one node at a plain redis:// URL (`ReadConnections.of` says when): TLS, a Unix
socket, a Cluster and a Sentinel keep redis-py's client, as every other call does. A
connection is made within the read's deadline, authenticates and selects its database as
redis-py's would, carries one call at a time and is closed on any failure, timeout or
cancellation (a reply half read must not answer the next call); the guard's slots bound
how many there are. Deadlines are kept by one timer for all reads, set for the nearest.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

Reply = list[bytes | None]


def pack(*parts: str | bytes) -> bytes:
    """A command as RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Connection(asyncio.Protocol):
    __slots__ = ("_reader", "_waiter", "lost", "transport")
    transport: asyncio.Transport  # set once connected (ReadConnections._connect)

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiter: asyncio.Future[Any] | None = None
        self.lost = False

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        try:
            self._reader.feed(data)
            reply = self._reader.gets()
            if reply is False:
                return
            if waiter is None or self._reader.gets() is not False:
                raise ConnectionError("redis sent a reply nothing asked for")
        except (hiredis.ProtocolError, ConnectionError) as exc:
            self._fail(exc if isinstance(exc, ConnectionError) else ConnectionError(str(exc)))
            return
        self._waiter = None
        if not waiter.done():
            waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(f"redis closed the connection ({exc})"))

    def _fail(self, exc: ConnectionError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.lost = True
        self.transport.abort()

    def expire(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError())

    async def call(self, command: bytes, deadline: float) -> Any:
        """The reply to `command`, raw from hiredis (a ReplyError is returned, not raised);
        TimeoutError at `deadline` (loop time)."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self.transport.write(command)
        timer = loop.call_at(deadline, self.expire)
        try:
            return await waiter
        finally:
            timer.cancel()


class ReadConnections:
    """MGET on connections of our own to one Redis node."""

    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._address = (host, port)
        handshake = []
        if password is not None:
            handshake.append(
                pack("AUTH", password) if username is None else pack("AUTH", username, password)
            )
        if db:
            handshake.append(pack("SELECT", str(db)))
        self._handshake = handshake
        self._idle: list[_Connection] = []
        self._closed = False
        # Reads in flight and their deadlines, and one timer for the nearest of them: a
        # timer per read (loop.call_at, then cancel) was a sixth of what a read costs, and
        # deadlines mostly come later than the one armed (now + redis.timeout).
        self._flying: dict[_Connection, float] = {}
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_at = math.inf

    @classmethod
    def of(cls, client: Any) -> ReadConnections | None:
        """For redis-py's `client` when it talks to one node over plain TCP, else None."""
        if type(client) is not aioredis.Redis:
            return None
        pool = client.connection_pool
        if pool.connection_class is not aioredis.Connection:
            return None  # TLS, a Unix socket, a Sentinel's master
        kw = pool.connection_kwargs
        return cls(
            kw.get("host", "localhost"),
            int(kw.get("port", 6379)),
            int(kw.get("db", 0) or 0),
            kw.get("username"),
            kw.get("password"),
        )

    async def mget(self, keys: Sequence[str], deadline: float) -> Reply:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.lost:
                break
        else:
            conn = await self._connect(deadline)
        out = [b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)]
        for key in keys:
            data = key.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        loop = asyncio.get_running_loop()
        waiter = conn._waiter = loop.create_future()
        conn.transport.write(b"".join(out))
        flying = self._flying
        flying[conn] = deadline
        if deadline < self._alarm_at:
            self._arm(loop, deadline)
        try:
            reply = await waiter
        except BaseException:
            conn.close()
            raise
        finally:
            del flying[conn]
        if self._closed:
            conn.close()
        else:
            idle.append(conn)
        if type(reply) is not list:
            if isinstance(reply, hiredis.ReplyError):
                raise ResponseError(str(reply))
            raise ConnectionError(f"redis answered MGET with {type(reply).__name__}")
        return reply

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm = loop.call_at(at, self._sweep, loop)
        self._alarm_at = at

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time out the reads whose deadline has come; the timer again for the next."""
        self._alarm, self._alarm_at = None, math.inf
        now = loop.time()
        nearest = math.inf
        for conn, deadline in self._flying.items():
            if deadline <= now:
                conn.expire()
            elif deadline < nearest:
                nearest = deadline
        if nearest < math.inf:
            self._arm(loop, nearest)

    async def _connect(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(deadline):
            transport, conn = await loop.create_connection(_Connection, *self._address)
        conn.transport = transport  # not in connection_made: uvloop calls it only later
        try:
            for command in self._handshake:
                reply = await conn.call(command, deadline)
                if isinstance(reply, hiredis.ReplyError):
                    raise ResponseError(str(reply))
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        self._closed = True
        if self._alarm is not None:
            self._alarm.cancel()
        for conn in self._idle:
            conn.close()
        self._idle.clear()
