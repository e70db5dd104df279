"""The `request_id:` section: the header a request's id is read from and returned in
(proxy/http/request_id.py makes and checks the ids)."""

from __future__ import annotations

from pydantic import Field, field_validator

from proxy.config.cors import HeaderName
from proxy.config.section import Section

# Fields the proxy or the connection owns: an id under one of these names would be dropped
# on the way upstream or would break the message's framing.
_RESERVED = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "date",
        "server",
        "via",
        "age",
        "x-cache",
        "cache-status",
        "vary",
    }
)


class RequestIdSettings(Section):
    """`request_id:` (or `request_id: false`). Every request gets an id: the client's, from
    `header`, when it is sane, otherwise one the proxy makes."""

    header: HeaderName = Field(
        "X-Request-ID",
        description="The field ids are read from, returned in and sent upstream in. A client's "
        "id is kept when it sent exactly one of 1 to 128 printable, visible ASCII characters; "
        "otherwise the proxy makes one.",
        examples=["X-Correlation-ID"],
    )

    @field_validator("header")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower() in _RESERVED:
            raise ValueError(f"{value!r} is a field the proxy sets itself: pick another name")
        return value
