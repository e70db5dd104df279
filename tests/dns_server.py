"""A DNS server for the tests: UDP on a free loopback port, answering from a table the test
changes as it goes (dnslib encodes and decodes the packets).

The proxy is pointed at it with `upstream.dns.nameservers: ["127.0.0.1:PORT"]`; nothing leaves
loopback. It counts the questions it gets per name, so a test can tell a cached answer from
a fresh one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord


@dataclass
class DnsServer(asyncio.DatagramProtocol):
    # name (no trailing dot) -> [(IPv4 address, TTL)]; a name not here is NXDOMAIN
    records: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    silent: bool = False  # True: questions go unanswered, as from a dead server
    questions: Counter[str] = field(default_factory=Counter)  # A questions per name
    port: int = 0
    transport: asyncio.DatagramTransport | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # not a subclass, in 3.11

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.silent:
            return
        question = DNSRecord.parse(data)
        name = str(question.q.qname).rstrip(".")
        reply = question.reply()
        if name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
        if question.q.qtype == QTYPE.A:
            self.questions[name] += 1
            for ip, ttl in self.records.get(name, []):
                reply.add_answer(RR(question.q.qname, QTYPE.A, rdata=A(ip), ttl=ttl))
        # AAAA (and anything else): no data, NOERROR for a known name
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    server = DnsServer()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=("127.0.0.1", 0))
    server.port = transport.get_extra_info("sockname")[1]
    yield server
    transport.close()
