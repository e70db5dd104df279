"""append_vary: the Vary list every varying stage extends. Pure, no sockets."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.http.vary import append_vary


@pytest.mark.parametrize(
    ("existing", "added", "expected"),
    [
        ([], ("Origin",), ["Origin"]),
        (["Accept-Encoding"], ("Origin",), ["Accept-Encoding, Origin"]),
        (["accept-encoding"], ("Accept-Encoding",), ["accept-encoding"]),
        (["Accept-Encoding", "Origin, accept-encoding"], ("ORIGIN",), ["Accept-Encoding, Origin"]),
        (["Accept-Language,,  Cookie "], ("Origin", "Cookie"), ["Accept-Language, Cookie, Origin"]),
        (["*"], ("Origin",), ["*"]),
        (["Accept", "*"], ("Origin",), ["Accept", "*"]),  # `*` is left exactly as it was
        (["Accept"], ("*",), ["*"]),
        ([""], (), []),
        ([], ("Origin", "Origin"), ["Origin"]),
    ],
)
def test_append_vary(existing: list[str], added: tuple[str, ...], expected: list[str]) -> None:
    headers: CIMultiDict[str] = CIMultiDict([("Vary", v) for v in existing])
    headers["X-Other"] = "kept"
    append_vary(headers, *added)
    assert headers.getall("Vary", []) == expected
    assert headers["X-Other"] == "kept"
