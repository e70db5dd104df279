"""`Soft-Purge: 1` on a purge request, as Fastly's `Fastly-Soft-Purge: 1`: pure."""

from __future__ import annotations

from multidict import istr

from proxy.http.headers import Headers

SOFT_PURGE = istr("Soft-Purge")


def soft_purge(headers: Headers) -> bool | None:
    """True for `1`; False when absent or `0`; None for anything else, to be refused: a
    typo must not turn a soft purge into a hard one, nor two fields into a guess."""
    values = headers.getall(SOFT_PURGE, ())
    if not values:
        return False
    if len(values) > 1:
        return None
    return {"1": True, "0": False}.get(values[0].strip(" \t"))
