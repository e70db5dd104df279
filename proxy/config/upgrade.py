"""A route's `upgrade:` section: WebSocket requests passed through to its upstream, how long a
joined connection may idle, and how many may be open at once (proxy/pipeline/upgrade.py).

WebSocket only: the proxy port's parser (aiohttp's) holds back the bytes after an upgrade
request's head for `Upgrade: websocket` alone, and parses what follows any other as HTTP, so
no other protocol could be joined whole. Nor should h2c ever be: once switched, the client
could send the upstream any request past every rule here (h2c smuggling)."""

from __future__ import annotations

from pydantic import Field

from proxy.config.durations import Duration
from proxy.config.section import Section


class UpgradeSettings(Section):
    """`upgrade: true`: WebSocket on this route, with these defaults."""

    idle_timeout: Duration = Field(
        60.0,
        gt=0,
        description="Seconds a switched connection may pass no byte either way (a client not "
        "reading counts as idle); then both sides are closed. WebSocket pings keep it open.",
        examples=[60, "5m"],
    )
    max_open: int = Field(
        1000,
        ge=1,
        description="Switched connections open at once on this route, per process; past it 503 "
        "`too_many_upgrades`. They hold no slot of upstream.pool.max_connections (which bounds "
        "requests in flight), but each holds a client and an upstream descriptor.",
        examples=[1000],
    )
