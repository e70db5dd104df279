"""Who the client is, when proxies stand in between: pure, no I/O.

Only a proxy we trust can vouch for an address: the socket peer is the one fact we have,
and each `X-Forwarded-For` / `Forwarded` entry was written by the hop to its right. So the
chain is read from the right while the hops are trusted, and the first address that is
not trusted is the client. Whatever a client writes into those headers sits to the left of
that point and is never read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

from proxy.config.networks import IPNetwork, parse_network

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Port suffixes some proxies append to XFF entries (Azure: "192.0.2.1:4711").
_PORT_CHARS: Final = frozenset("0123456789")


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it, or None (garbage, `unknown`, obfuscated `_x`).

    Accepts `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
    IPv4-mapped IPv6 (`::ffff:192.0.2.1`, what a dual-stack socket reports) becomes IPv4,
    so one CIDR list covers both.
    """
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :]
        if end == -1 or (rest and not (rest[0] == ":" and _is_port(rest[1:]))):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has at least two colons
        text, _, port = text.partition(":")
        if not _is_port(port):
            return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_key(address: IPAddress, v6_prefix: int) -> str:
    """The name `address` counts under as a client: IPv4 as it is, IPv6 by its network.

    One IPv6 host is given a /64 (or more) and may send from any address in it: were each
    /128 a client of its own, it would be as many clients as it likes (RFC 6177, RFC 8981).
    """
    if isinstance(address, ipaddress.IPv4Address) or v6_prefix >= 128:
        return str(address)
    shift = 128 - v6_prefix
    network = ipaddress.IPv6Address(int(address) >> shift << shift)
    return f"{network}/{v6_prefix}"


class ClientKeys:
    """`address_key` for the addresses aiohttp reports (`request.remote`), remembered.

    IPv4 costs one `in`; IPv6 is parsed once per address (bounded memo).
    """

    __slots__ = ("_memo", "v6_prefix")

    def __init__(self, v6_prefix: int = 64) -> None:
        self.v6_prefix = v6_prefix
        self._memo: dict[str, str] = {}

    def __call__(self, address: str) -> str:
        if ":" not in address:
            return address
        key = self._memo.get(address)
        if key is None:
            if len(self._memo) >= 4096:
                self._memo.clear()
            parsed = parse_address(address)
            key = address if parsed is None else address_key(parsed, self.v6_prefix)
            self._memo[address] = key
        return key


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and _PORT_CHARS.issuperset(text)


class TrustedProxies:
    """The `trusted_proxies` list, parsed once; `trusts` is what each request asks."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, networks: Iterable[str | IPNetwork] = ()) -> None:
        parsed = [n if not isinstance(n, str) else parse_network(n) for n in networks]
        self._v4 = tuple(n for n in parsed if isinstance(n, ipaddress.IPv4Network))
        self._v6 = tuple(n for n in parsed if isinstance(n, ipaddress.IPv6Network))

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)

    def trusts_address(self, address: IPAddress | None) -> bool:
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv4Address):
            return any(address in n for n in self._v4)
        return any(address in n for n in self._v6)

    def trusts(self, peer: str | None) -> bool:
        """Is the socket peer (as aiohttp's `request.remote` gives it) a trusted proxy?"""
        # The common deployment trusts nobody: no parsing at all then.
        if peer is None or not (self._v4 or self._v6):
            return False
        return self.trusts_address(parse_address(peer))


def forwarded_for_chain(lines: Sequence[str]) -> list[IPAddress | None]:
    """X-Forwarded-For entries, left to right, over all header lines; None for garbage."""
    return [parse_address(item) for line in lines for item in line.split(",")]


def forwarded_chain(lines: Sequence[str]) -> list[IPAddress | None]:
    """The `for=` node of each RFC 7239 `Forwarded` element, left to right; None if unknown.

    Elements are split on every comma, quoted or not: no node identifier contains one, and
    a client's unterminated quote must not swallow the elements trusted proxies append
    after it. An element whose `for` is missing, repeated, `unknown`, obfuscated (`_hidden`)
    or malformed is None: a hop we cannot see past.
    """
    chain: list[IPAddress | None] = []
    for line in lines:
        for element in line.split(","):
            node: str | None = None
            seen = 0
            for pair in element.split(";"):
                name, eq, value = pair.partition("=")
                if eq and name.strip().lower() == "for":
                    seen += 1
                    node = _unquote(value.strip())
            chain.append(parse_address(node) if seen == 1 and node else None)
    return chain


def _unquote(value: str) -> str | None:
    if not value.startswith('"'):
        return value
    if len(value) < 2 or not value.endswith('"'):
        return None
    inner = value[1:-1]
    if "\\" in inner:  # quoted-pair: `\x` is `x` (RFC 9110 §5.6.4)
        out: list[str] = []
        chars = iter(inner)
        for ch in chars:
            out.append(next(chars, "") if ch == "\\" else ch)
        inner = "".join(out)
    return inner


def _walk(chain: list[IPAddress | None], peer: IPAddress, trusted: TrustedProxies) -> IPAddress:
    """Right-most address that is not trusted; the hop that wrote a None stands in for it."""
    reporter = peer
    for address in reversed(chain):
        if address is None:
            return reporter  # the trusted hop that wrote it knows no more than itself
        if not trusted.trusts_address(address):
            return address
        reporter = address
    return reporter  # trusted all the way: the farthest hop is the client


def client_address(
    peer: str | None,
    forwarded_for: Sequence[str],
    forwarded: Sequence[str],
    trusted: TrustedProxies,
) -> str | None:
    """The client's address: the socket peer unless it is a trusted proxy (see module doc).

    `forwarded_for` / `forwarded` are all lines of `X-Forwarded-For` / `Forwarded`. When a
    trusted peer sent both and they name different clients, one of them passed a client's
    own header through untouched, and which one cannot be told: the result is then the peer
    itself, so a spoofing client is lumped with its proxy instead of choosing who it is.
    """
    peer_address = parse_address(peer) if peer is not None else None
    if peer_address is None:
        return peer  # not an IP socket: nothing to walk, nothing to normalise
    if not trusted.trusts_address(peer_address):
        return str(peer_address)
    clients = {
        _walk(chain, peer_address, trusted)
        for chain in (forwarded_for_chain(forwarded_for), forwarded_chain(forwarded))
        if chain
    }
    if len(clients) != 1:
        return str(peer_address)
    return str(clients.pop())


def forwarded_node(address: str) -> str:
    """`address` as an RFC 7239 `for=` value: IPv6 bracketed and quoted, others as they are."""
    return f'"[{address}]"' if ":" in address else address
