"""Protocol upgrades (RFC 9110 §7.8, RFC 6455 §4): which requests switch, and to what. Pure.

A request switches only when its route allows a protocol it offers, and only as RFC 9110 has
a client ask: an HTTP/1.1 GET without a body, `upgrade` in its Connection field. Anything else
is served as plain HTTP with the Upgrade field dropped (hop-by-hop), which §7.8 allows a server
to do. A 101 is accepted only for a protocol that was offered upstream: a proxy that joins
the connections on any answer lets a client talk to the upstream past every rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

Headers = CIMultiDict[str] | CIMultiDictProxy[str]

# What routes may switch to (config/upgrade.py says why no other).
WEBSOCKET = frozenset({"websocket"})


def _tokens(values: list[str]) -> list[str]:
    return [t.strip() for value in values for t in value.split(",") if t.strip()]


def _name(protocol: str) -> str:
    """`websocket` of `WebSocket` or `HTTP/2.0`'s `http`: the name, without its version."""
    return protocol.partition("/")[0].strip().lower()


@dataclass(frozen=True, slots=True)
class UpgradeRules:
    """A route's `upgrade:` section, resolved at start-up."""

    protocols: frozenset[str]  # lower-case names
    idle_timeout: float
    max_open: int

    def offered(
        self, method: str, version: tuple[int, int], has_body: bool, headers: Headers
    ) -> str | None:
        """The Upgrade value to send upstream (the client's protocols this route allows, as
        the client spelt them), or None: serve the request as plain HTTP."""
        if method != "GET" or has_body or version != (1, 1) or "Upgrade" not in headers:
            return None  # §7.8: an HTTP/1.0 request's Upgrade MUST be ignored
        if "upgrade" not in (t.lower() for t in _tokens(headers.getall("Connection", []))):
            return None  # not meant for this hop: a sender of Upgrade lists it in Connection
        allowed = [p for p in _tokens(headers.getall("Upgrade")) if _name(p) in self.protocols]
        return ", ".join(allowed) if allowed else None

    @staticmethod
    def switched_as_offered(offered: str, upgrade: list[str]) -> bool:
        """Whether a 101's Upgrade values name only protocols that were `offered` (§7.8: a
        server MUST NOT switch to one the client did not indicate)."""
        names = {_name(p) for p in _tokens([offered])}
        switched = _tokens(upgrade)
        return bool(switched) and all(_name(p) in names for p in switched)
