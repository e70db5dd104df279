"""Addresses and networks as configured (`trusted_proxies`): CIDRs or single addresses.

Who the client is behind those proxies is proxy/http/clientaddr.py's.
"""

from __future__ import annotations

import ipaddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(value: str) -> IPNetwork:
    """A CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address; ValueError says why not."""
    text = value.strip()
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"not an IP address or CIDR network: {value!r}") from None
        # "10.0.0.1/8" is almost always a typo for a network: say which one was meant.
        raise ValueError(f"{value!r} has host bits set; did you mean {loose}?") from None
    mapped = network.network_address
    v4 = mapped.ipv4_mapped if isinstance(mapped, ipaddress.IPv6Address) else None
    if v4 is not None and network.prefixlen >= 96:
        # Addresses are unmapped before matching (http/clientaddr.py): so is the network.
        return ipaddress.IPv4Network(f"{v4}/{network.prefixlen - 96}")
    return network
