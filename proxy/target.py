"""The request target as the client sent it (RFC 9112 §3.2), split without re-encoding."""

from __future__ import annotations

from typing import NamedTuple

_DEFAULT_PORTS = {"http": 80, "https": 443}


class BadTarget(ValueError):
    pass


class Target(NamedTuple):  # a tuple: built on every request, cheaper than a frozen dataclass
    path: str  # raw, still percent-encoded
    query: str  # raw, without '?'; "" when absent
    authority: tuple[str, int] | None  # set for absolute-form (a client using us as HTTP_PROXY)

    @property
    def path_and_query(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


def parse_target(raw: str) -> Target:
    """Split origin-form (`/p?q`) or absolute-form (`http://h:port/p?q`)."""
    if raw.startswith("/"):
        path, _, query = raw.partition("?")
        return Target(path, query, None)
    scheme, sep, rest = raw.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS:
        raise BadTarget(f"unsupported request target {raw[:100]!r}")
    end = len(rest)
    for stop in "/?":
        i = rest.find(stop)
        if i != -1:
            end = min(end, i)
    authority, remainder = rest[:end], rest[end:]
    host, port = _split_authority(authority.rsplit("@", 1)[-1], _DEFAULT_PORTS[scheme])
    if not remainder.startswith("/"):
        remainder = "/" + remainder  # RFC 9112 §3.2.2: an empty path is "/"
    path, _, query = remainder.partition("?")
    return Target(path, query, (host, port))


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):  # IPv6 literal
        end = authority.find("]")
        if end == -1:
            raise BadTarget("unterminated IPv6 literal in request target")
        host, rest = authority[1:end], authority[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        raise BadTarget("request target has no host")
    if not port_text:
        return host.lower(), default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadTarget(f"bad port in request target: {port_text[:20]!r}")
    return host.lower(), int(port_text)
