# What tests/dns_server.py calls of dnslib (a DNS responder on loopback, in the tests).
from typing import Any

class _Names:
    def __getitem__(self, key: int | str) -> Any: ...
    def __getattr__(self, name: str) -> int: ...

QTYPE: _Names
RCODE: _Names

class DNSLabel: ...

class DNSQuestion:
    qname: DNSLabel
    qtype: int

class DNSHeader:
    rcode: int

class RD: ...

class A(RD):
    def __init__(self, data: str) -> None: ...

class RR:
    def __init__(
        self,
        rname: DNSLabel | str,
        rtype: int = ...,
        rclass: int = ...,
        ttl: int = ...,
        rdata: RD | None = ...,
    ) -> None: ...

class DNSRecord:
    q: DNSQuestion
    header: DNSHeader
    @classmethod
    def parse(cls, packet: bytes) -> DNSRecord: ...
    def reply(self) -> DNSRecord: ...
    def add_answer(self, *rr: RR) -> None: ...
    def pack(self) -> bytes: ...
