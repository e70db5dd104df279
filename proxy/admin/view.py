"""What the admin apps may touch of the process they serve: small views, not the process.

A running proxy (proxy/server/app.py) hands the admin API a `ServerView`; a supervisor of
workers (proxy/server/supervisor.py) hands its admin port a `SupervisorView`. admin/ never
imports server/: whatever a handler needs and neither view offers, it cannot reach.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multidict import CIMultiDict
    from prometheus_client import CollectorRegistry

    from proxy.admin.merge import MissingResponse, WorkerResponse
    from proxy.admin.revocation import Revoke
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
    # By prefix or tag, every tier; soft (True): mark stale instead of removing.
    purge: Callable[[PurgeKind, str, bool], Awaitable[PurgeResult]]
    # (path, query, Host or None, soft): None back when no caching route takes that URL.
    purge_url: Callable[[str, str, str | None, bool], Awaitable[PurgeResult | None]]
    shared_tier: bool  # purges reach Redis too, and say what they removed there
    reload: Callable[[], dict[str, object]]  # re-read the config file
    revocations: RevocationList
    revoke: Revoke  # through Redis when there is one, else revocations.revoke


# (method, path as sent, headers to pass on, body) -> each worker's response, or why none came
AskAll = Callable[
    [str, str, "CIMultiDict[str]", bytes], Awaitable[list["WorkerResponse | MissingResponse"]]
]


@dataclass(frozen=True, slots=True)
class SupervisorView:
    token: str | None
    workers: Callable[[], list[dict[str, object]]]  # GET /workers, one entry per worker
    ask_all: AskAll
    readiness: Callable[[], str]  # /readyz's word: ready, starting, no_workers, draining
    reload: Callable[[], None]  # re-read the config for the workers started from now on
    note_revocation: Callable[[bytes], Awaitable[None]]  # kept for workers started later
    metrics_dir: Callable[[], str]  # where every worker writes its metrics
