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


# --- reading a path as an origin would (route matching) --------------------------------------

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789ABCDEFabcdef")


def normalise_escapes(path: str) -> str:
    """RFC 3986 §6.2.2.1-2: escapes of unreserved characters decoded (`%69` is `i`), every
    other escape upper-cased (`%2f` is `%2F`). Equivalent for every origin: safe to match on.
    A `%` not followed by two hex digits is left as it is."""
    if "%" not in path:
        return path
    parts = path.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) >= 2 and part[0] in _HEX and part[1] in _HEX:
            char = chr(int(part[:2], 16))
            escape = char if char in _UNRESERVED else "%" + part[:2].upper()
            out.append(escape + part[2:])
        else:
            out.append("%" + part)
    return "".join(out)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path: `/a/./b/../c` is `/a/c`; `..` never climbs
    above the root. Empty segments (`//`) are kept, as the RFC keeps them."""
    segments = path.split("/")
    out: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")  # `/a/..` is `/a/`'s parent directory: `/`
    return "/" + "/".join(out)


def needs_reading(path: str) -> bool:
    """Could an origin read `path` as anything but its bytes? False for nearly every path."""
    return "%" in path or "/." in path or "//" in path or "#" in path


def path_readings(path: str) -> list[str]:
    """The path as route matching reads it, then the other ways an origin may read it.

    First: escapes normalised, dot segments removed (RFC 3986 §6.2.2), the fragment cut (it
    is never forwarded). Then the same with and without what origins disagree on: removing
    dot segments at all, decoding `%2F` into `/` (WSGI's PATH_INFO does), merging `//` into
    `/` (nginx's merge_slashes does). Route matching wants every reading to select one route.
    """
    path = normalise_escapes(path.partition("#")[0]) or "/"
    readings = [remove_dot_segments(path)]
    for slashes in (False, True):
        for merge in (False, True):
            reading = path
            if slashes:
                if "%2F" not in reading:
                    continue
                reading = reading.replace("%2F", "/")
            if merge:
                if "//" not in reading:
                    continue
                while "//" in reading:
                    reading = reading.replace("//", "/")
            for candidate in (reading, remove_dot_segments(reading)):
                if candidate not in readings:
                    readings.append(candidate)
    return readings
