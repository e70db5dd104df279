"""Upstream names to addresses: c-ares against a real DNS server on loopback, and the system's
getaddrinfo, each behind the one Resolver that keeps answers for their TTL."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable

import pytest

from proxy.config.connect import Dns
from proxy.upstream.resolve import (
    AddrInfo,
    CaresLookup,
    Resolver,
    SystemLookup,
    default_lookup,
)
from tests.dns_server import DnsServer, dns_server  # noqa: F401


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


MakeResolver = Callable[..., Resolver]


@pytest.fixture
async def resolver(dns_server: DnsServer) -> AsyncIterator[MakeResolver]:  # noqa: F811
    made: list[Resolver] = []

    def make(clock: Callable[[], float], **dns: object) -> Resolver:
        settings = Dns.model_validate({"nameservers": [dns_server.address], **dns})
        made.append(Resolver(settings, clock=clock))
        return made[-1]

    yield make
    for r in made:
        await r.close()


def ips(addresses: tuple[AddrInfo, ...]) -> list[str]:
    return [a[4][0] for a in addresses]


async def test_c_ares_gives_the_addresses_in_order_with_the_shortest_ttl(
    dns_server: DnsServer,  # noqa: F811
) -> None:
    dns_server.records["api.test"] = [("127.0.0.3", 40), ("127.0.0.2", 30)]
    lookup = CaresLookup([dns_server.address])
    try:
        addresses, ttl = await lookup.lookup("api.test", 8443)
    finally:
        await lookup.close()
    assert addresses == [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.3", 8443)),
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.2", 8443)),
    ]
    assert ttl == 30


async def test_an_answer_is_kept_for_its_ttl_then_used_while_asked_again(
    dns_server: DnsServer,  # noqa: F811
    resolver: MakeResolver,
) -> None:
    # Real time: c-ares keeps answers for their TTL too (its own cache, counting down).
    dns_server.records["api.test"] = [("127.0.0.2", 1)]
    r = resolver(time.monotonic, min_ttl=0, max_ttl=300)
    assert ips(await r.resolve("api.test", 80)) == ["127.0.0.2"]
    dns_server.records["api.test"] = [("127.0.0.3", 1)]
    assert ips(await r.resolve("api.test", 80)) == ["127.0.0.2"]  # within its TTL
    assert dns_server.questions["api.test"] == 1
    await asyncio.sleep(1.2)
    # Expired: this connection still goes to the old address, no waiting on the name server...
    assert ips(await r.resolve("api.test", 80)) == ["127.0.0.2"]
    await asyncio.sleep(0.2)
    # ...and the ones after it to the new one.
    assert ips(await r.resolve("api.test", 80)) == ["127.0.0.3"]
    assert dns_server.questions["api.test"] == 2


async def test_the_ttl_is_bounded_by_the_floor_and_the_ceiling(
    dns_server: DnsServer,  # noqa: F811
) -> None:
    dns_server.records["zero.test"] = [("127.0.0.2", 0)]
    dns_server.records["day.test"] = [("127.0.0.2", 86400)]
    asked: list[str] = []

    class Counted(CaresLookup):  # the real c-ares lookup, counted
        async def lookup(self, host: str, port: int) -> tuple[list[AddrInfo], float | None]:
            asked.append(host)
            return await super().lookup(host, port)

    clock = Clock()
    dns = Dns(min_ttl=5, max_ttl=60)
    r = Resolver(dns, Counted([dns_server.address]), clock=clock)
    try:
        await r.resolve("zero.test", 80)
        await r.resolve("day.test", 80)
        clock.now += 4.9
        await r.resolve("zero.test", 80)  # TTL 0, yet kept the floor's 5 s
        assert asked == ["zero.test", "day.test"]
        clock.now += 56
        await r.resolve("day.test", 80)  # a day's TTL, asked again after the ceiling's 60 s
        await asyncio.sleep(0.2)
        assert asked == ["zero.test", "day.test", "day.test"]
    finally:
        await r.close()


async def test_a_burst_of_new_connections_asks_once(
    dns_server: DnsServer,  # noqa: F811
    resolver: MakeResolver,
) -> None:
    dns_server.records["api.test"] = [("127.0.0.2", 30)]
    r = resolver(Clock())
    answers = await asyncio.gather(*(r.resolve("api.test", 80) for _ in range(20)))
    assert {ips(a)[0] for a in answers} == {"127.0.0.2"}
    assert dns_server.questions["api.test"] == 1


async def test_a_failed_lookup_keeps_the_last_addresses(
    dns_server: DnsServer,  # noqa: F811
    resolver: MakeResolver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dns_server.records["api.test"] = [("127.0.0.2", 1)]
    r = resolver(time.monotonic, min_ttl=0, negative_ttl=1.5)
    await r.resolve("api.test", 80)
    del dns_server.records["api.test"]  # NXDOMAIN from now on
    await asyncio.sleep(1.2)
    assert ips(await r.resolve("api.test", 80)) == ["127.0.0.2"]
    await asyncio.sleep(0.2)
    assert "its last addresses are used" in caplog.text
    assert ips(await r.resolve("api.test", 80)) == ["127.0.0.2"]
    assert dns_server.questions["api.test"] == 2  # not asked again within negative_ttl
    await asyncio.sleep(1.5)
    dns_server.records["api.test"] = [("127.0.0.3", 10)]
    await r.resolve("api.test", 80)
    await asyncio.sleep(0.2)
    assert ips(await r.resolve("api.test", 80)) == ["127.0.0.3"]


async def test_a_name_that_does_not_resolve_fails_fast_for_negative_ttl(
    dns_server: DnsServer,  # noqa: F811
    resolver: MakeResolver,
) -> None:
    clock = Clock()
    r = resolver(clock, negative_ttl=5)
    for _ in range(3):
        with pytest.raises(OSError, match=r"cannot resolve nowhere\.test: Domain name not found"):
            await r.resolve("nowhere.test", 80)
    assert dns_server.questions["nowhere.test"] == 1
    clock.now += 5
    dns_server.records["nowhere.test"] = [("127.0.0.2", 10)]
    assert ips(await r.resolve("nowhere.test", 80)) == ["127.0.0.2"]


async def test_ip_addresses_are_not_looked_up(
    dns_server: DnsServer,  # noqa: F811
    resolver: MakeResolver,
) -> None:
    r = resolver(Clock())
    assert await r.resolve("127.0.0.1", 80) == (
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80)),
    )
    assert ips(await r.resolve("::1", 80)) == ["::1"]
    assert not dns_server.questions


async def test_without_the_dns_extra_getaddrinfo_answers_kept_max_ttl() -> None:
    asked: list[str] = []

    class Counted(SystemLookup):  # the real getaddrinfo, counted
        async def lookup(self, host: str, port: int) -> tuple[list[AddrInfo], float | None]:
            asked.append(host)
            return await super().lookup(host, port)

    clock = Clock()
    r = Resolver(Dns(max_ttl=60), Counted(), clock=clock)
    try:
        assert "127.0.0.1" in ips(await r.resolve("localhost", 80))
        clock.now += 59
        await r.resolve("localhost", 80)
        assert asked == ["localhost"]
        clock.now += 1
        await r.resolve("localhost", 80)
        await asyncio.sleep(0.1)
        assert asked == ["localhost", "localhost"]
    finally:
        await r.close()


def test_the_lookup_is_c_ares_with_the_dns_extra_else_getaddrinfo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(default_lookup(Dns()), CaresLookup)
    monkeypatch.setattr("proxy.upstream.resolve.has_dns_extra", lambda: False)
    assert isinstance(default_lookup(Dns()), SystemLookup)
