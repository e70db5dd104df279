"""Invalidation (RFC 9111 §4.4): what an unsafe request's response makes stale (RFC 9110
§9.2.1 for which methods are safe).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urljoin, urlsplit

from proxy.http.headers import Headers

# §9.2.1 of RFC 9110: only these are "safe"; everything else invalidates.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def is_unsafe_method(method: str) -> bool:
    """Whether ``method`` triggers invalidation (§4.4)."""
    return method not in SAFE_METHODS


def _norm_host(netloc: str) -> str:
    # Drop userinfo and default ports: we don't know the scheme, so both :80
    # and :443 are treated as default.
    host = netloc.rpartition("@")[2].lower()
    for port in (":80", ":443"):
        if host.endswith(port):
            return host[: -len(port)]
    return host


def _same_origin_target(reference: str, base_path: str, host: str) -> str | None:
    reference = reference.strip()
    if not reference:
        return None
    try:
        resolved = urlsplit(urljoin(f"http://{host}{base_path}", reference))
    except ValueError:
        return None
    if resolved.scheme not in ("http", "https") or _norm_host(resolved.netloc) != host:
        return None
    path = resolved.path or "/"
    return f"{path}?{resolved.query}" if resolved.query else path


def invalidation_targets(
    method: str,
    status: int,
    request_url_path_query: str,
    response_headers: Headers,
    request_host: str,
) -> list[str]:
    """Path+query targets to invalidate after an unsafe request (§4.4).

    Only for non-safe methods with a 2xx/3xx (non-error) status: the request
    target, plus same-host Location / Content-Location (relative references
    resolved against the request path). Order kept, duplicates dropped.
    """
    if method in SAFE_METHODS or not 200 <= status < 400:
        return []
    target = request_url_path_query or "/"
    targets = [target]
    host = _norm_host(request_host)
    base_path = target.partition("?")[0]
    if not base_path.startswith("/"):
        base_path = "/" + base_path
    for name in ("Location", "Content-Location"):
        for value in response_headers.getall(name, ()):
            resolved = _same_origin_target(value, base_path, host)
            if resolved is not None and resolved not in targets:
                targets.append(resolved)
    return targets
