"""Accept-Encoding negotiation and acceptability: pure, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.edge.compression import negotiate as negotiation
from proxy.edge.compression.negotiate import is_acceptable, negotiate

BR_GZIP = ("br", "gzip")
ALL = ("br", "zstd", "gzip")


@pytest.mark.parametrize(
    ("accept", "offered", "expected"),
    [
        (None, BR_GZIP, None),  # no header: conservative, no compression
        ("", BR_GZIP, None),  # empty: identity only
        ("gzip", BR_GZIP, "gzip"),
        ("gzip, br", BR_GZIP, "br"),  # tie: server preference
        ("gzip, deflate, br, zstd", ALL, "br"),
        ("gzip, zstd", ALL, "zstd"),
        ("br;q=0.5, gzip", BR_GZIP, "gzip"),
        ("br;q=0.9, gzip;q=0.8", BR_GZIP, "br"),
        ("GZIP ; Q = 0.8 ,  BR;q=0.9", BR_GZIP, "br"),  # case and whitespace
        ("gzip;q=0", BR_GZIP, None),
        ("gzip;q=0, br;q=0", BR_GZIP, None),
        ("gzip;q=0, *", BR_GZIP, "br"),
        ("br;q=0, *", BR_GZIP, "gzip"),
        ("*", BR_GZIP, "br"),
        ("*;q=0", BR_GZIP, None),
        ("*;q=0, gzip", BR_GZIP, "gzip"),
        ("*;q=0.5, gzip", BR_GZIP, "gzip"),  # listed beats the wildcard
        ("identity", BR_GZIP, None),
        ("identity;q=1, gzip;q=0.5", BR_GZIP, None),  # client prefers identity
        ("gzip, identity;q=0.5", BR_GZIP, "gzip"),
        ("gzip, identity", BR_GZIP, "gzip"),  # tie with identity: compress
        ("gzip;q=0.5", BR_GZIP, "gzip"),  # implicit identity does not outrank a listed coding
        ("x-gzip", BR_GZIP, "gzip"),
        ("deflate", BR_GZIP, None),
        ("deflate", ("deflate", "gzip"), None),  # never deflate, even if offered
        ("deflate, gzip;q=0.1", BR_GZIP, "gzip"),
        ("zstd", BR_GZIP, None),  # not offered
        ("gzip;q=abc", BR_GZIP, None),  # malformed q: entry ignored
        ("gzip;q=abc, br;q=0.1", BR_GZIP, "br"),
        ("gzip;q=1.5", BR_GZIP, None),
        ("gzip;q=-1", BR_GZIP, None),
        ("gzip;q=nan", BR_GZIP, None),
        ("gzip;q=", BR_GZIP, None),
        ('gzip;q="1"', BR_GZIP, None),
        ("gzip;q=0.000", BR_GZIP, None),
        ("gzip;q=0.001, br;q=0", BR_GZIP, "gzip"),
        ("gzip;q=1.000", BR_GZIP, "gzip"),
        ("gzip;q=0.5000", BR_GZIP, "gzip"),  # extra digits tolerated
        ("br;q=0.5, br;q=0", BR_GZIP, None),  # listed twice: the refusal wins
        ("gzip;level=9", BR_GZIP, "gzip"),  # unknown parameters ignored
        (",,, ;;; , gzip ,", BR_GZIP, "gzip"),
        ("\x00\xff\u2603", BR_GZIP, None),
        ("gzip", (), None),
    ],
)
def test_negotiate(accept: str | None, offered: tuple[str, ...], expected: str | None) -> None:
    assert negotiate(accept, offered) == expected
    assert negotiate(accept, offered) == expected  # the cached result is the same


def test_negotiate_cache_is_keyed_by_offer_and_bounded() -> None:
    assert negotiate("gzip, br", ("gzip", "br")) == "gzip"
    assert negotiate("gzip, br", ("br", "gzip")) == "br"
    for i in range(2000):
        negotiate(f"gzip;q=0.{i % 1000:03d}, x-{i}", BR_GZIP)
    assert len(negotiation._negotiated_cache) <= 512
    assert len(negotiation._parsed_cache) <= 512
    assert negotiate("x" * 1000 + ", gzip", BR_GZIP) == "gzip"  # long values work, uncached


@given(st.one_of(st.none(), st.text(max_size=200)), st.sampled_from([BR_GZIP, ALL, ("gzip",), ()]))
def test_negotiate_never_raises_and_only_returns_offered(
    accept: str | None, offered: tuple[str, ...]
) -> None:
    result = negotiate(accept, offered)
    assert result is None or (result in offered and result != "deflate")


qvalue = st.sampled_from(["", ";q=0", ";q=0.1", ";q=0.5", ";q=0.9", ";q=1", ";Q=0.50"])
element = st.tuples(st.sampled_from(["br", "gzip", "zstd", "deflate", "*", "identity"]), qvalue)


@given(st.lists(element, max_size=6))
def test_negotiate_picks_a_coding_with_maximal_q(elements: list[tuple[str, str]]) -> None:
    header = ", ".join(c + q for c, q in elements)
    result = negotiate(header, ALL)

    def q_of(coding: str) -> float:
        # Reference semantics, written independently of the implementation.
        qs = [float(q.split("=")[1]) if q else 1.0 for c, q in elements if c == coding]
        if qs:
            return min(qs)
        star = [float(q.split("=")[1]) if q else 1.0 for c, q in elements if c == "*"]
        return min(star) if star else 0.0

    best = max(q_of(c) for c in ALL)
    if result is None:
        identity = [c for c, _ in elements if c == "identity"]
        assert best == 0.0 or (identity and q_of("identity") > best)
    else:
        assert q_of(result) == best > 0
        assert all(q_of(c) < best for c in ALL[: ALL.index(result)])  # earlier ones lost


@pytest.mark.parametrize(
    ("accept", "coding", "expected"),
    [
        ("gzip", "gzip", True),
        ("gzip", "x-gzip", True),
        ("gzip;q=0.1", "gzip", True),
        ("gzip;q=0", "gzip", False),
        ("br", "gzip", False),
        ("*", "deflate", True),
        ("*;q=0", "gzip", False),
        ("deflate", "deflate", True),
        (None, "gzip", False),  # no header: do not send a coding nobody asked for
        (None, "identity", True),
        ("gzip", "identity", True),
        ("identity;q=0", "identity", False),
        ("*;q=0", "identity", False),
        ("*;q=0, identity", "identity", True),
    ],
)
def test_is_acceptable(accept: str | None, coding: str, expected: bool) -> None:
    assert is_acceptable(accept, coding) is expected
