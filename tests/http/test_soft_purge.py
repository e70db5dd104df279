"""`Soft-Purge: 1` on a purge request: pure."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.http.soft_purge import soft_purge


@pytest.mark.parametrize(
    ("fields", "soft"),
    [
        ([], False),
        ([("Soft-Purge", "1")], True),
        ([("soft-purge", " 1 ")], True),
        ([("Soft-Purge", "0")], False),
        ([("Soft-Purge", "yes")], None),  # refused: a typo must not purge hard
        ([("Soft-Purge", "")], None),
        ([("Soft-Purge", "1"), ("Soft-Purge", "1")], None),
    ],
)
def test_soft_purge_field(fields: list[tuple[str, str]], soft: bool | None) -> None:
    assert soft_purge(CIMultiDict(fields)) is soft
