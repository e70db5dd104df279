"""Background-task helpers every folder may import: only the standard library, no proxy module.

Outside the layers on purpose: stopping a task is needed on every floor (the Redis followers,
the revocation mirror, the observer's ticker, warming), and none of them should reach up into
server/ for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has stopped (None: nothing to do)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
