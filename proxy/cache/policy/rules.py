"""A route's cache rules as the RFC 9111 decisions read them: its own freshness and stale
windows, and what identifies a user (§3.5). Resolved once from the config (proxy/cache/route.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import multidict

# Request headers that always carry credentials. RFC 9111 §3.5 names Authorization;
# cookies identify a user just as well, and APIs personalise by them without `private`.
CREDENTIAL_HEADERS: Final = (multidict.istr("Authorization"), multidict.istr("Cookie"))


@dataclass(frozen=True, slots=True)
class CacheRules:
    """Per-route cache configuration, already resolved."""

    ttl: float | None = None  # freshness when the origin gives none
    force_ttl: bool = False  # ttl beats origin freshness (not no-store/private/no-cache)
    stale_while_revalidate: float = 0.0  # max()'d with the origin's directive
    stale_if_error: float = 0.0  # max()'d with the origin's directive
    store_set_cookie: bool = False
    # Per-user routes: the request header whose value scopes entries to one user.
    user_header: str | None = None
    # Request headers that identify a user (CREDENTIAL_HEADERS and any configured).
    credentials: tuple[str, ...] = CREDENTIAL_HEADERS
    # Credentialed requests on shared routes: "explicit" | "lookup" | "pass" (request_scope).
    on_credentials: str = "explicit"
    heuristic_fraction: float = 0.1  # §4.2.2 (10% of Date - Last-Modified)
    heuristic_max: float = 86400.0
