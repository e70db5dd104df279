"""What the admin apps may touch of the process they serve: small views, not the process.

A running proxy (proxy/server/app.py) hands the admin API a `ServerView`. admin/ never
imports server/: whatever a handler needs and the view does not offer, it cannot reach.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from proxy.edge.revocation import RevocationList
    from proxy.observe.documents import Documents
    from proxy.shared.tier import PurgeKind, PurgeResult
    from proxy.upstream.guard import OriginStats


@dataclass(frozen=True, slots=True)
class ServerView:
    token: str | None  # admin.token; None: none configured
    ready: Callable[[], bool]  # /readyz: listening, not draining
    draining: Callable[[], bool]  # since SIGTERM
    checks: Callable[[], Awaitable[dict[str, dict[str, Any]]]]  # /health's probes, with detail
    circuits: Callable[[], list[OriginStats]]  # each upstream origin's breaker and queue
    documents: Documents  # /performance/*, /alerts/active, /cache/stats, rate-limit health
    registry: CollectorRegistry  # /metrics
    listener_stats: Callable[[], dict[str, Any]]  # /listener/stats
    purge: Callable[[PurgeKind, str], Awaitable[PurgeResult]]  # by prefix or tag, every tier
    purge_url: Callable[[str, str], Awaitable[PurgeResult | None]]  # None: no caching route
    shared_tier: bool  # purges reach Redis too, and say what they removed there
    reload: Callable[[], dict[str, object]]  # re-read the config file
    revocations: RevocationList
