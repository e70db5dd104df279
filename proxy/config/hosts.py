"""Host names as configured: `listen.hosts` patterns and `listen.public_host`.

The allowlist that matches requests' Host against them is proxy/http/hosts.py's.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

# A DNS name or IPv4 literal, loosely (underscores occur in real internal names).
_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
NAME: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PORT: Final = re.compile(r"[0-9]{1,5}")


def host_name(value: str) -> str | None:
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
    return text if NAME.fullmatch(text) else None


def parse_host_pattern(value: str) -> str:
    """A `listen.hosts` entry: `api.example.com`, `*.example.com`, `127.0.0.1`, `[::1]`."""
    wildcard = value.strip().startswith("*.")
    name = host_name(value.strip()[2:] if wildcard else value)
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
    if host_name(host) is None or (port and not _PORT.fullmatch(port)):
        raise ValueError(f"not a host or host:port: {value!r}")
    return text


def _has_port(text: str) -> bool:
    text = text.strip()
    if text.startswith("["):
        return "]:" in text
    return text.count(":") == 1
