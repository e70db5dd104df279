"""Clean JSON error responses: a client never sees a traceback."""

from __future__ import annotations

import math

import orjson
from aiohttp import web


class JsonError(web.Response):
    """A JSON error the proxy makes: `{"error", "message"}`, any `extra` fields and, once the
    request has an id, `"request_id"` (refusals made before the id is at hand get it with
    `add_request_id`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        request_id: str | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.error_fields: dict[str, object] = {"error": code, "message": message}
        if extra:
            self.error_fields.update(extra)
        if request_id is not None:
            self.error_fields["request_id"] = request_id
        super().__init__(
            status=status,
            body=orjson.dumps(self.error_fields),
            content_type="application/json",
            headers=headers,
        )

    def add_request_id(self, request_id: str) -> None:
        if self.error_fields.get("request_id") != request_id:
            self.error_fields["request_id"] = request_id
            self.body = orjson.dumps(self.error_fields)


def json_error(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
    extra: dict[str, object] | None = None,
) -> JsonError:
    return JsonError(status, code, message, headers, request_id, extra)


class UpstreamError(Exception):
    """A failure talking to the upstream, already classified for the client.

    `message` is the client's sentence: never an internal address or an OS error, which
    go to `detail`, the log's (the message when there is nothing more to say).
    `retry_after`: seconds the client should wait (sent as Retry-After); `circuit_open`:
    the request was never sent because the origin's circuit is open (the cache may then
    serve what it has, however stale).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: float | None = None,
        circuit_open: bool = False,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.circuit_open = circuit_open
        self.detail = detail or message

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # Whole seconds, at least 1: `Retry-After: 0` invites an immediate stampede.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class BodyTooLarge(Exception):
    """A streamed request body went past its route's `max_body_size` (then 413)."""


class ClientBodyError(Exception):
    """The client's request body stalled (`timed_out`), broke off or went past its bound
    (`too_large`) while it was being sent upstream: a response for the client (408, 400 or
    413), never a failure of the upstream."""

    def __init__(self, timed_out: bool, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.too_large = too_large
