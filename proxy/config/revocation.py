"""The `revocation:` section: the revoked-token list's bounds and its Redis mirror
(proxy/edge/revocation.py keeps the list)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from proxy.config.durations import Duration
from proxy.config.section import Model


class RevocationSettings(Model):
    resync_interval: Duration = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds between full reloads of the revocation list from Redis "
        "(messages missed in between heal by then).",
        examples=[30, "1m"],
    )
    max_entries: int = Field(100_000, ge=1, description="Live revocations kept, at most.")
    before_sync: Literal["serve", "refuse"] = Field(
        "serve",
        description="With Redis, until the list is first loaded from it: `serve` (and /health "
        "says so) or `refuse` requests carrying a bearer token with a 503, since the list "
        "might refuse them.",
    )
