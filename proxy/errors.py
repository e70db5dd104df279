"""Clean JSON error answers: a client never sees a traceback."""

from __future__ import annotations

import orjson
from aiohttp import web


def json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": code, "message": message}),
        content_type="application/json",
        headers=headers,
    )
