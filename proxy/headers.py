"""Header hygiene for forwarding (RFC 9110 §7.6): pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

Headers = CIMultiDict[str] | CIMultiDictProxy[str]

VIA = "1.1 cacheproxy"

# RFC 9110 §7.6.1 plus the de-facto ones every proxy strips (Proxy-Connection, Keep-Alive).
# Proxy-Authorization/-Authenticate are meant for this hop, not the origin's.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)

# Set by the proxy itself from the connection it forwards on.
_REQUEST_OWN = frozenset({"host", "expect", "content-length"})


def _connection_tokens(headers: Headers) -> set[str]:
    """Header names listed in Connection are hop-by-hop too (§7.6.1)."""
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _copy_end_to_end(headers: Headers, also_drop: Iterable[str] = ()) -> CIMultiDict[str]:
    drop = HOP_BY_HOP | _connection_tokens(headers) | frozenset(also_drop)
    # Repeated fields (Set-Cookie, Via, ...) are kept one by one, in order.
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


def _append(headers: CIMultiDict[str], name: str, value: str) -> None:
    existing = headers.getall(name, ())
    headers.popall(name, None)
    headers[name] = ", ".join([*existing, value])


def forward_request_headers(
    headers: Headers,
    *,
    client_ip: str | None,
    proto: str,
    original_host: str | None,
    upstream_host: str,
    content_length: int | None,
) -> CIMultiDict[str]:
    """Headers to send upstream for a client request."""
    out = _copy_end_to_end(headers, _REQUEST_OWN)
    out["Host"] = upstream_host
    if content_length is not None:
        out["Content-Length"] = str(content_length)
    if client_ip:
        _append(out, "X-Forwarded-For", client_ip)
    out["X-Forwarded-Proto"] = proto
    if original_host and "X-Forwarded-Host" not in out:
        out["X-Forwarded-Host"] = original_host
    _append(out, "Via", VIA)
    return out


def forward_response_headers(headers: Headers) -> CIMultiDict[str]:
    """Headers to send the client for an upstream response."""
    out = _copy_end_to_end(headers)
    _append(out, "Via", VIA)
    return out
