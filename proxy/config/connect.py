"""How connections to the upstream are opened: `upstream.dns` (how long answers are kept, which
servers are asked). The behaviour is proxy/upstream/connect.py's and resolve.py's.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re

from pydantic import Field, field_validator, model_validator

from proxy.config.durations import Duration
from proxy.config.section import Model

# `[v6]:port` or `v4:port`; anything else is an address without a port (or not one at all).
_SERVER = re.compile(
    r"\[(?P<v6>[^\]]+)\]:(?P<port6>[0-9]{1,5})|(?P<v4>[0-9.]+):(?P<port4>[0-9]{1,5})"
)


def nameserver(value: str) -> str:
    """`1.2.3.4`, `1.2.3.4:5353`, `::1` or `[::1]:5353`, as c-ares takes it (`ip:port`)."""
    text = value.strip()
    m = _SERVER.fullmatch(text)
    address, port = text, "53"
    if m is not None:
        address = m.group("v6") or m.group("v4")
        port = m.group("port6") or m.group("port4")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(
            f"not a name server address: {value!r} (an IP address, optionally with "
            "a port: 10.0.0.2, 10.0.0.2:5353, [fd00::2]:53)"
        ) from None
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"not a port: {port} in {value!r}")
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def has_dns_extra() -> bool:
    """Whether aiodns (the `dns` extra) is installed: found, not imported."""
    return importlib.util.find_spec("aiodns") is not None


class Dns(Model):
    min_ttl: Duration = Field(
        5.0,
        ge=0,
        description="Seconds an answer is kept at least, whatever its TTL says: a TTL of 0 "
        "would ask the name servers for every new connection.",
        examples=[5, "1s"],
    )
    max_ttl: Duration = Field(
        60.0,
        gt=0,
        description="Seconds an answer is kept at most before the host is looked up again, "
        "however long its TTL (a caching resolver on the way, c-ares's own included, still "
        "answers from its cache until the record's TTL is out). Without the `dns` extra TTLs "
        "are unknown and every answer is kept this long.",
        examples=[60, "5m"],
    )
    negative_ttl: Duration = Field(
        5.0,
        gt=0,
        description="Seconds a failed lookup is remembered: a name that does not resolve is "
        "answered 502 at once meanwhile, without asking again; a name that resolved before "
        "keeps its last addresses and is asked again after this.",
        examples=[5, "30s"],
    )
    nameservers: tuple[str, ...] = Field(
        (),
        description="Name servers asked instead of /etc/resolv.conf's, each an IP address "
        "with an optional port. Needs the `dns` extra. Empty: the system's.",
        examples=[["10.0.0.2", "[fd00::2]:53", "127.0.0.1:5353"]],
    )

    @field_validator("nameservers")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        servers = tuple(nameserver(v) for v in value)
        if servers and not has_dns_extra():
            raise ValueError(
                "needs the dns extra (aiodns), not installed: pip install 'cacheproxy[dns]'"
            )
        return servers

    @model_validator(mode="after")
    def _floor_below_ceiling(self) -> Dns:
        if self.min_ttl > self.max_ttl:
            raise ValueError(f"min_ttl ({self.min_ttl:g}) is above max_ttl ({self.max_ttl:g})")
        return self


__all__ = ["Dns", "has_dns_extra", "nameserver"]
