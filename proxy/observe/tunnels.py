"""Switched connections (WebSocket and other Upgrade tunnels) counted per route: plain
integers bumped by proxy/pipeline/upgrade.py and proxy/respond/tunnel.py, series at scrape time."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.observe.metrics import Series

# Why a tunnel closed: its client or its upstream closed (or was lost), it passed no byte for
# the route's upgrade.idle_timeout, or the shutdown grace ended.
CLOSE_REASONS = ("client", "upstream", "idle_timeout", "shutdown")


@dataclass(slots=True)
class TunnelCounts:
    """One route's tunnels."""

    opened: int = 0  # 101s relayed
    open: int = 0  # joined now, or waiting for the upstream's answer (counted against max_open)
    refused: int = 0  # max_open reached: answered 503
    to_upstream: int = 0  # bytes from clients
    to_client: int = 0  # bytes from the upstream (a 101's head not included)
    closed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLOSE_REASONS, 0))


class TunnelMeters:
    def __init__(self) -> None:
        self.by_route: dict[str, TunnelCounts] = {}

    def route(self, name: str) -> TunnelCounts:
        """`name`'s counts, made at first use (a reload keeps those of routes it keeps)."""
        counts = self.by_route.get(name)
        if counts is None:
            counts = self.by_route[name] = TunnelCounts()
        return counts

    def series(self) -> list[Series]:
        routes = self.by_route.items()
        if not routes:
            return []
        return [
            Series(
                "counter",
                "cacheproxy_upgrades_opened",
                "Upgrade requests switched (the upstream's 101 relayed, the connections joined)",
                ("route",),
                {(name,): c.opened for name, c in routes},
            ),
            Series(
                "gauge",
                "cacheproxy_upgrades_open",
                "Switched connections open now (and upgrade requests awaiting the upstream)",
                ("route",),
                {(name,): c.open for name, c in routes},
                across_workers="sum",
            ),
            Series(
                "counter",
                "cacheproxy_upgrades_refused",
                "Upgrade requests answered 503 too_many_upgrades: the route's upgrade.max_open",
                ("route",),
                {(name,): c.refused for name, c in routes},
            ),
            Series(
                "counter",
                "cacheproxy_upgrade_bytes",
                "Bytes passed through switched connections, by direction",
                ("route", "direction"),
                {
                    **{(name, "to_upstream"): c.to_upstream for name, c in routes},
                    **{(name, "to_client"): c.to_client for name, c in routes},
                },
            ),
            Series(
                "counter",
                "cacheproxy_upgrades_closed",
                "Switched connections closed, by what closed them: the client, the upstream, "
                "upgrade.idle_timeout, or the end of shutdown_grace",
                ("route", "reason"),
                {(name, why): n for name, c in routes for why, n in c.closed.items()},
            ),
        ]
