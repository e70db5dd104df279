"""An upstream's targets as built once from its config: each target's origin and pool key,
and the balancer that shares requests among them (proxy/upstream/balance.py).

A target is an origin: its pool, queue, breaker, ejection and figures are its origin's guard
(proxy/upstream/guard.py), which the client binds to the group on its first request.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from yarl import URL

from proxy.config.upstream import UpstreamTargets
from proxy.upstream.balance import Balancer, balancer
from proxy.upstream.http1 import OriginKey, origin_key

if TYPE_CHECKING:
    from proxy.upstream.guard import OriginGuard


@dataclass(frozen=True, slots=True)
class Target:
    origin: str  # scheme://host:port, no path
    key: OriginKey  # (scheme, host, port): the pool's connections to it
    weight: int
    authority: tuple[str, int]  # (lower-case host, port)
    # The Host line for this target when it is not the group's (`fields[0]` as built for
    # the first target): each target's own host, unless `host` names one for all.
    host_line: str | None


def _host_header(url: URL) -> str:
    return url.raw_authority.rsplit("@", 1)[-1]  # never the userinfo


class TargetGroup:
    """The targets of one upstream (`upstream`, or a route's own), in config order."""

    def __init__(self, config: UpstreamTargets, rand: Callable[[], float] = random.random) -> None:
        self.config = config
        urls = [URL(t.url) for t in config.target_list]
        first = urls[0]
        # What the first target's requests say, and what cached entries are keyed by.
        self.host_header = config.host or _host_header(first)
        self.base_path = first.raw_path.rstrip("/")
        targets = []
        for url, settings in zip(urls, config.target_list, strict=True):
            assert url.host is not None and url.port is not None  # validated by config
            own = _host_header(url)
            origin = f"{url.scheme}://{own}"
            host_line = None if config.host or own == self.host_header else f"Host: {own}"
            targets.append(
                Target(
                    origin,
                    origin_key(origin),
                    settings.weight,
                    (url.host.lower(), url.port),
                    host_line,
                )
            )
        self.targets = tuple(targets)
        # One target: every request goes to it, with no choice made.
        self.only: Target | None = targets[0] if len(targets) == 1 else None
        self.balancer: Balancer | None = None
        if self.only is None:
            weights = [t.weight for t in targets]
            names = [t.origin for t in targets]
            self.balancer = balancer(config.balance, names, weights, rand)
        # Bound by the client on the first request (UpstreamClient.bind): each target's guard,
        # and how many targets may be out before the group ignores who is out (panic).
        self.guards: list[OriginGuard] | None = None
        self.max_out = 0
