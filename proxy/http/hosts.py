"""Host names: the `listen.hosts` allowlist (like nginx `server_name`) and `public_host`.

Pure and compiled once; `HostAllowlist.allows` runs on every request, hits included.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Final

# A DNS name or IPv4 literal, loosely (underscores occur in real internal names).
_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_NAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PORT: Final = re.compile(r"[0-9]{1,5}")
_SEEN_MAX: Final = 1024


def _name(value: str) -> str | None:
    """`value` as a Host name without port: lower-case, IPv6 bracketed; None if not one."""
    text = value.strip().lower().removesuffix(".")
    bracketed = text.startswith("[") and text.endswith("]")
    if bracketed:
        text = text[1:-1]
    if bracketed or ":" in text:  # brackets hold an IPv6 literal and nothing else
        try:
            return f"[{ipaddress.IPv6Address(text)}]"
        except ValueError:
            return None
    return text if _NAME.fullmatch(text) else None


def parse_host_pattern(value: str) -> str:
    """A `listen.hosts` entry: `api.example.com`, `*.example.com`, `127.0.0.1`, `[::1]`."""
    wildcard = value.strip().startswith("*.")
    name = _name(value.strip()[2:] if wildcard else value)
    if name is None or (wildcard and name.startswith("[")):
        raise ValueError(
            f"not a host name or `*.domain` wildcard: {value!r}"
            + (" (leave the port out: any port matches)" if _has_port(value) else "")
        )
    return f"*.{name}" if wildcard else name


def parse_public_host(value: str) -> str:
    """`listen.public_host`: what X-Forwarded-Host says, `host` or `host:port`."""
    text = value.strip()
    host, port = text, ""
    if _has_port(text):
        host, _, port = text.rpartition(":")
    if _name(host) is None or (port and not _PORT.fullmatch(port)):
        raise ValueError(f"not a host or host:port: {value!r}")
    return text


def _has_port(text: str) -> bool:
    text = text.strip()
    if text.startswith("["):
        return "]:" in text
    return text.count(":") == 1


def host_without_port(host: str) -> str:
    """The name part of a Host header value, normalised as `parse_host_pattern` stores names."""
    host = host.lower()
    if host.startswith("["):  # rare: an IPv6 literal, canonicalised like the patterns
        return _name(host[: host.find("]") + 1]) or host
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
            and _NAME.fullmatch(name) is not None
        )
        if allowed and len(self._seen) < _SEEN_MAX:
            self._seen.add(host)
        return allowed
