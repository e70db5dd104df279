"""What unsafe requests invalidate (RFC 9111 §4.4): pure."""

from __future__ import annotations

import pytest

from proxy.cache.policy.invalidation import SAFE_METHODS, invalidation_targets, is_unsafe_method
from tests.cache.policy.samples import h

INVALIDATION = [
    # id, method, status, target, response headers, expected
    ("get-never", "GET", 200, "/a", [("Location", "/b")], []),
    ("head-never", "HEAD", 200, "/a", [], []),
    ("options-never", "OPTIONS", 204, "/a", [], []),
    ("post-ok", "POST", 201, "/items?x=1", [], ["/items?x=1"]),
    ("delete-redirect", "DELETE", 303, "/a", [], ["/a"]),
    ("custom-method", "PURGEISH", 200, "/a", [], ["/a"]),
    ("error-status", "PUT", 404, "/a", [("Location", "/b")], []),
    ("server-error", "POST", 500, "/a", [], []),
    ("informational", "POST", 100, "/a", [], []),
    ("relative-location", "POST", 201, "/items", [("Location", "/items/7?v=2")],
     ["/items", "/items/7?v=2"]),
    ("path-relative", "POST", 201, "/items/new", [("Location", "7")], ["/items/new", "/items/7"]),
    ("dot-segments", "POST", 201, "/a/b/c", [("Location", "../x")], ["/a/b/c", "/a/x"]),
    ("absolute-same-host", "PUT", 200, "/a", [("Content-Location", "https://API.example.com/b")],
     ["/a", "/b"]),
    ("absolute-default-port", "PUT", 200, "/a", [("Location", "http://api.example.com:80/c")],
     ["/a", "/c"]),
    ("absolute-other-host", "PUT", 200, "/a", [("Location", "https://evil.example/b")], ["/a"]),
    ("other-port", "PUT", 200, "/a", [("Location", "http://api.example.com:8080/b")], ["/a"]),
    ("scheme-relative-other", "PUT", 200, "/a", [("Location", "//other.example/b")], ["/a"]),
    ("non-http-scheme", "PUT", 200, "/a", [("Location", "ftp://api.example.com/b")], ["/a"]),
    ("both-and-dedup", "PATCH", 200, "/a", [("Location", "/b"), ("Content-Location", "/b"),
     ("Content-Location", "/a")], ["/a", "/b"]),
    ("fragment-dropped", "POST", 200, "/a", [("Location", "/b#frag")], ["/a", "/b"]),
    ("empty-location", "POST", 200, "/a", [("Location", "  ")], ["/a"]),
    ("bad-ipv6", "POST", 200, "/a", [("Location", "http://[::1/x")], ["/a"]),
    ("empty-target", "POST", 200, "", [], ["/"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "status", "target", "resp", "expected"),
    [case[1:] for case in INVALIDATION],
    ids=[case[0] for case in INVALIDATION],
)
def test_invalidation_targets(
    method: str,
    status: int,
    target: str,
    resp: list[tuple[str, str]],
    expected: list[str],
) -> None:
    assert invalidation_targets(method, status, target, h(*resp), "api.example.com") == expected


def test_invalidation_request_host_with_port() -> None:
    got = invalidation_targets(
        "POST", 200, "/a", h(("Location", "http://localhost:8080/b")), "LOCALHOST:8080"
    )
    assert got == ["/a", "/b"]


def test_method_helpers() -> None:
    assert all(is_unsafe_method(m) for m in ("POST", "PUT", "PATCH", "DELETE", "PROPFIND"))
    assert not any(is_unsafe_method(m) for m in SAFE_METHODS)
    assert is_unsafe_method("get")  # methods are case-sensitive (RFC 9110 §9.1)
