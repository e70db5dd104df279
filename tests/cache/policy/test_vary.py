"""Selecting a stored variant by Vary (RFC 9111 §4.1): pure."""

from __future__ import annotations

from proxy.cache.policy.vary import VARY_ABSENT, vary_fields, vary_key
from tests.cache.policy.samples import h


def test_vary_fields_normalised() -> None:
    headers = h(("Vary", "Accept-Encoding, accept-language"), ("Vary", " ACCEPT-ENCODING ,Origin"))
    assert vary_fields(headers) == ("accept-encoding", "accept-language", "origin")
    assert vary_fields(h()) == ()
    assert vary_fields(h(("Vary", " , "))) == ()
    assert vary_fields(h(("Vary", "Accept"), ("Vary", "*"))) is None


def test_vary_key_normalises_whitespace_and_lines() -> None:
    fields = ("accept-encoding", "accept-language")
    a = vary_key(fields, h(("Accept-Encoding", "gzip,br"), ("Accept-Language", " en ")))
    b = vary_key(
        fields,
        h(("accept-encoding", "gzip"), ("Accept-Encoding", " br"), ("Accept-Language", "en")),
    )
    assert a == b == ("gzip, br", "en")


def test_vary_key_distinguishes_values_and_absence() -> None:
    fields = ("accept-language",)
    assert vary_key(fields, h(("Accept-Language", "en"))) != vary_key(
        fields, h(("Accept-Language", "de"))
    )
    absent = vary_key(fields, h())
    empty = vary_key(fields, h(("Accept-Language", "")))
    assert absent == (VARY_ABSENT,)
    assert empty == ("",)
    assert absent != empty
    assert vary_key((), h(("Accept", "x"))) == ()


def test_vary_key_keeps_field_order() -> None:
    headers = h(("A", "1"), ("B", "2"))
    assert vary_key(("b", "a"), headers) == ("2", "1")
