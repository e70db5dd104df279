"""Upstream host names to addresses, kept as long as dns_cache.py decides.

getaddrinfo says nothing of how long its answer holds, so with the `dns` extra the name servers
are asked through c-ares (aiodns: what aiohttp's AsyncResolver uses), which gives each record's
TTL, reads /etc/hosts and /etc/resolv.conf as the system does, and can be pointed at other
servers (`upstream.dns.nameservers`). Without the extra, the system's getaddrinfo answers and
each answer is kept `max_ttl` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from proxy.config.connect import Dns, has_dns_extra
from proxy.tasks import cancel
from proxy.upstream import dns_cache
from proxy.upstream.dns_cache import Answer, Use

log = logging.getLogger("cacheproxy.upstream")

# (family, type, proto, canonname, sockaddr): what getaddrinfo gives, aiohappyeyeballs takes.
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
# Each try of each name server; the whole lookup is bounded by LOOKUP_TIMEOUT whatever c-ares
# does, and a connection waiting on it by upstream.timeouts.connect.
QUERY_TIMEOUT = 2.0
QUERY_TRIES = 2
LOOKUP_TIMEOUT = 10.0


class Lookup(Protocol):
    async def lookup(self, host: str, port: int) -> tuple[list[AddrInfo], float | None]:
        """`host`'s addresses and the seconds they hold (None: unknown); OSError if none."""
        ...

    async def close(self) -> None: ...


class SystemLookup:
    """The system's getaddrinfo (in the loop's thread pool): no TTL."""

    async def lookup(self, host: str, port: int) -> tuple[list[AddrInfo], float | None]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [(f, t, p, "", a) for f, t, p, _, a in infos], None

    async def close(self) -> None:
        pass


class CaresLookup:
    """c-ares, through aiodns: the answer's TTL is its records' shortest, CNAMEs included."""

    def __init__(self, nameservers: Sequence[str] = ()) -> None:
        import aiodns  # the optional extra: imported only where it is used

        self._aiodns = aiodns
        self._nameservers = list(nameservers)
        self._resolver: aiodns.DNSResolver | None = None  # on first use: it binds the loop

    async def lookup(self, host: str, port: int) -> tuple[list[AddrInfo], float | None]:
        if self._resolver is None:
            self._resolver = self._aiodns.DNSResolver(
                nameservers=self._nameservers or None, timeout=QUERY_TIMEOUT, tries=QUERY_TRIES
            )
        try:
            result = await self._resolver.getaddrinfo(host, port=port, type=socket.SOCK_STREAM)
        except self._aiodns.error.DNSError as exc:
            raise OSError(exc.args[-1] if exc.args else "lookup failed") from None
        addresses: list[AddrInfo] = []
        for node in result.nodes:
            ip, *rest = node.addr
            addresses.append(
                (node.family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip.decode(), *rest))
            )
        ttls = [node.ttl for node in result.nodes] + [c.ttl for c in result.cnames]
        return addresses, float(min(ttls)) if ttls else None

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None


def default_lookup(settings: Dns) -> Lookup:
    if has_dns_extra():
        return CaresLookup(settings.nameservers)
    return SystemLookup()  # the loader refuses nameservers without the extra


def _numeric(host: str, port: int) -> list[AddrInfo] | None:
    """An IP address's own AddrInfo (IPv6 scope included), or None for a name: no lookup."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return None
    return [(f, t, p, "", a) for f, t, p, _, a in infos]


class Resolver:
    """Addresses per (host, port), shared by every connection the process opens."""

    def __init__(
        self,
        settings: Dns,
        lookup: Lookup | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.lookup = lookup or default_lookup(settings)
        self._clock = clock
        self._answers: dict[tuple[str, int], Answer[AddrInfo]] = {}
        # One lookup at a time per name: a burst of new connections asks once.
        self._pending: dict[tuple[str, int], asyncio.Task[Answer[AddrInfo]]] = {}

    async def resolve(self, host: str, port: int) -> tuple[AddrInfo, ...]:
        """`host`'s addresses, in the resolver's order; OSError when it has none."""
        key = (host, port)
        answer = self._answers.get(key)
        decision = dns_cache.use(answer, self._clock())
        if decision is Use.FRESH or decision is Use.STALE:
            assert answer is not None
            if decision is Use.STALE:
                self._ask(key)  # for the connections after this one
            return answer.addresses
        if decision is Use.WAIT:
            if answer is None and (numeric := _numeric(host, port)) is not None:
                answer = self._answers[key] = dns_cache.literal(tuple(numeric))
                return answer.addresses
            # Shielded: a connection that gives up must not cancel the others' lookup.
            answer = await asyncio.shield(self._ask(key))
            if answer.addresses:
                return answer.addresses
        assert answer is not None
        raise OSError(f"cannot resolve {host}: {answer.error}")

    def _ask(self, key: tuple[str, int]) -> asyncio.Task[Answer[AddrInfo]]:
        task = self._pending.get(key)
        if task is None:
            task = self._pending[key] = asyncio.create_task(self._lookup(key))
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        return task

    async def _lookup(self, key: tuple[str, int]) -> Answer[AddrInfo]:
        host, port = key
        dns = self.settings
        previous = self._answers.get(key)
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT):
                addresses, ttl = await self.lookup.lookup(host, port)
            if not addresses:
                raise OSError("no address")
        except Exception as exc:  # whatever went wrong, the name is not resolved this time
            error = str(exc) or type(exc).__name__
            answer = dns_cache.failed(previous, error, self._clock(), dns.negative_ttl)
            if answer.addresses:
                log.warning(
                    "DNS lookup of upstream %s failed (%s): its last addresses are used, "
                    "asked again in %g s",
                    host,
                    error,
                    dns.negative_ttl,
                )
            else:
                log.warning(
                    "cannot resolve upstream %s (%s): its connections fail for %g s",
                    host,
                    error,
                    dns.negative_ttl,
                )
        else:
            now = self._clock()
            answer = dns_cache.answered(tuple(addresses), ttl, now, dns.min_ttl, dns.max_ttl)
        self._answers[key] = answer
        return answer

    async def close(self) -> None:
        for task in list(self._pending.values()):
            await cancel(task)
        self._pending.clear()
        await self.lookup.close()


__all__ = ["AddrInfo", "CaresLookup", "Lookup", "Resolver", "SystemLookup", "default_lookup"]
