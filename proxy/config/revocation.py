"""The `revocation:` section: the revoked-token list's bounds and its Redis mirror
(proxy/edge/revocation.py keeps the list)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from proxy.config.durations import Duration
from proxy.config.section import Model


class RevocationSettings(Model):
    # Seconds between full reloads of the mirror from Redis (missed messages heal by then).
    resync_interval: Duration = Field(30.0, gt=0, le=3600)
    max_entries: int = Field(100_000, ge=1)
    # With Redis, until the list is first loaded from it: `serve` (and say so in /health)
    # or `refuse` requests carrying a bearer token (503), which the list might refuse.
    before_sync: Literal["serve", "refuse"] = "serve"
