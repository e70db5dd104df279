"""Host names matched against requests: the `listen.hosts` allowlist (like nginx
`server_name`) and the routes' `match.hosts` (virtual hosts).

Pure and compiled once; `HostAllowlist.allows` and `HostTable.lookup` run on every request,
hits included. The patterns are parsed, and refused with a reason, by proxy/config/hosts.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, Generic, TypeVar

from proxy.config.hosts import NAME, host_name, parse_host_pattern

_SEEN_MAX: Final = 1024


def host_without_port(host: str) -> str:
    """The name part of a Host header value, normalised as `parse_host_pattern` stores names."""
    host = host.lower()
    if host.startswith("["):  # rare: an IPv6 literal, canonicalised like the patterns
        return host_name(host[: host.find("]") + 1]) or host
    name, colon, _ = host.rpartition(":")
    return (name if colon else host).removesuffix(".")


def authority_host(authority: tuple[str, int]) -> str:
    """An absolute-form target's host (RFC 9112 §3.2.2: it stands for Host) as a Host value."""
    host = authority[0]
    return f"[{host}]" if ":" in host else host


def _subdomain(name: str, suffix: str | tuple[str, ...]) -> bool:
    """`name` is under `.domain` (`suffix`, or one of them). The name check keeps
    "x/.example.com" and ".example.com" out of the wildcards."""
    return name.endswith(suffix) and NAME.fullmatch(name) is not None


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
        allowed = name in self._exact or (bool(self._suffixes) and _subdomain(name, self._suffixes))
        if allowed and len(self._seen) < _SEEN_MAX:
            self._seen.add(host)
        return allowed


T = TypeVar("T")


class HostTable(Generic[T]):
    """Which of some items (routes) serve a Host, in the order they are to be tried.

    Each item names hosts (`api.example.com`, `*.example.com`) or none (any host). For a Host,
    the items naming it exactly come first, then those whose wildcard matches it, the longer
    domain first (nginx's `server_name` order, Envoy's virtual hosts), then the items naming
    no host; within each group, the order given. Everything is listed at start-up for each
    configured name; a Host seen once is one dict lookup after that.
    """

    __slots__ = ("_any", "_exact", "_seen", "_wildcards")

    def __init__(self, items: Sequence[tuple[Sequence[str] | None, T]]) -> None:
        """`items`: (host patterns as proxy/config/hosts.py normalises them, or None; item)."""
        self._any: tuple[T, ...] = tuple(item for hosts, item in items if hosts is None)
        exact: dict[str, list[T]] = {}
        wildcards: dict[str, list[T]] = {}  # ".example.com" -> its items
        for hosts, item in items:
            for pattern in hosts or ():
                if pattern.startswith("*."):
                    group = wildcards.setdefault(pattern[1:], [])
                else:
                    group = exact.setdefault(pattern, [])
                if item not in group:  # listed twice in one route: tried once
                    group.append(item)
        # Longer domains first: `*.eu.example.com` before `*.example.com`.
        self._wildcards: tuple[tuple[str, tuple[T, ...]], ...] = tuple(
            (suffix, tuple(group))
            for suffix, group in sorted(wildcards.items(), key=lambda kv: -len(kv[0]))
        )
        self._exact: dict[str, tuple[T, ...]] = {
            name: self._order(group, name) for name, group in exact.items()
        }
        # Host values as clients send them ("API.example.com:8443"): real traffic costs one
        # dict lookup. Bounded: clients choose what they send.
        self._seen: dict[str, tuple[T, ...]] = dict(self._exact)

    def _order(self, first: Iterable[T], name: str) -> tuple[T, ...]:
        """`first` (the items naming `name`), then the wildcards' and the rest, each once."""
        groups = [group for suffix, group in self._wildcards if _subdomain(name, suffix)]
        ordered: list[T] = []
        for group in (first, *groups, self._any):
            ordered += [item for item in group if item not in ordered]
        return tuple(ordered)

    def lookup(self, host: str | None) -> tuple[T, ...]:
        """The items to try for a request's Host value (port, case and a trailing dot do not
        matter); None (no Host): the items naming no host."""
        if host is None:
            return self._any
        found = self._seen.get(host)
        if found is None:
            name = host_without_port(host)
            found = self._exact.get(name)
            if found is None:
                found = self._order((), name)
            if len(self._seen) < _SEEN_MAX:
                self._seen[host] = found
        return found
