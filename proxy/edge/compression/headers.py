"""The header rewrites that go with a change of content coding: Content-Encoding,
Content-Length, the validators and digests about the old bytes (RFC 9110 §8.4, §8.8.3), and
`Vary: Accept-Encoding` (§12.5.5). Pure: a header multidict in, a new one out.
"""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.http.headers import Headers
from proxy.http.vary import append_vary

__all__ = ["transformed_headers", "vary_accept_encoding"]

# Integrity/range headers describing the untransformed bytes; wrong once re-encoded.
_INVALIDATED = ("Content-MD5", "Content-Digest", "Repr-Digest", "Digest", "Accept-Ranges")


def vary_accept_encoding(headers: CIMultiDict[str]) -> None:
    """For an eligible response sent uncompressed: a downstream cache must still keep
    the variants apart, since another request may get a compressed one."""
    append_vary(headers, "Accept-Encoding")


def transformed_headers(headers: Headers, coding: str, new_length: int | None) -> CIMultiDict[str]:
    """A copy of *headers* for the body re-encoded as *coding* ("identity" for decoded).

    Content-Length is set to *new_length* or dropped (streaming). Integrity and range
    headers about the old bytes are dropped. A strong ETag is weakened: the bytes
    differ but the representation is semantically the same (as nginx does); an ETag
    that is not a valid entity-tag is dropped rather than left claiming byte identity.
    """
    out: CIMultiDict[str] = CIMultiDict(headers)
    if coding == "identity":
        out.popall("Content-Encoding", None)
    else:
        out["Content-Encoding"] = coding
    if new_length is None:
        out.popall("Content-Length", None)
    else:
        out["Content-Length"] = str(new_length)
    for name in _INVALIDATED:
        out.popall(name, None)
    append_vary(out, "Accept-Encoding")
    etag = out.get("ETag")
    if etag is not None and not etag.startswith("W/"):
        if etag.startswith('"'):
            out["ETag"] = "W/" + etag
        else:
            out.popall("ETag")
    return out
