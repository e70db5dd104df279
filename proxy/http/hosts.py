"""Host names: the `listen.hosts` allowlist (like nginx `server_name`) matched against requests.

Pure and compiled once; `HostAllowlist.allows` runs on every request, hits included. The
patterns are parsed, and refused with a reason, by proxy/config/hosts.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from proxy.config.hosts import NAME, host_name, parse_host_pattern

_SEEN_MAX: Final = 1024


def host_without_port(host: str) -> str:
    """The name part of a Host header value, normalised as `parse_host_pattern` stores names."""
    host = host.lower()
    if host.startswith("["):  # rare: an IPv6 literal, canonicalised like the patterns
        return host_name(host[: host.find("]") + 1]) or host
    name, colon, _ = host.rpartition(":")
    return (name if colon else host).removesuffix(".")


class HostAllowlist:
    """Exact names in a set, `*.domain` wildcards as one tuple for `str.endswith`."""

    __slots__ = ("_exact", "_seen", "_suffixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        normalised = [parse_host_pattern(p) for p in patterns]
        self._exact = frozenset(p for p in normalised if not p.startswith("*."))
        # "*.example.com" -> ".example.com": any subdomain, never the bare domain.
        self._suffixes = tuple(p[1:] for p in normalised if p.startswith("*."))
        # Host values as clients send them ("API.example.com:8443") once found allowed, so
        # real traffic costs one set lookup. Bounded: clients choose what they send.
        self._seen: set[str] = set(self._exact)

    def allows(self, host: str | None) -> bool:
        if host is None:
            return False  # HTTP/1.0 without Host: it names nothing we serve
        if host in self._seen:
            return True
        name = host_without_port(host)
        # The name check keeps "x/.example.com" and ".example.com" out of the wildcards.
        allowed = name in self._exact or (
            bool(self._suffixes)
            and name.endswith(self._suffixes)
            and NAME.fullmatch(name) is not None
        )
        if allowed and len(self._seen) < _SEEN_MAX:
            self._seen.add(host)
        return allowed
