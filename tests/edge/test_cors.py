"""CorsRules decisions: pure, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config.cors import CorsSettings
from proxy.edge.cors import CorsRules

APP = "https://app.example.com"


def cors_rules(**kwargs: object) -> CorsRules:
    return CorsRules(CorsSettings.model_validate(kwargs))


def request(**headers: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()}))


@pytest.fixture
def strict() -> CorsRules:
    return cors_rules(
        allow_origins=[APP, "https://*.example.com", "http://localhost:8080"],
        allow_origin_regex=[r"https://review-[0-9]+\.example\.dev"],
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Content-Type", "Authorization", "X-Requested-With"],
        expose_headers=["X-Total-Count", "X-Page-Count"],
        allow_credentials=True,
        max_age=600,
    )


@pytest.fixture
def public() -> CorsRules:
    return cors_rules(allow_origins=["*"], allow_headers=["*"], expose_headers=["X-Total-Count"])


# --- allowed_origin ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (APP, True),
        ("HTTPS://APP.EXAMPLE.COM", True),  # scheme and host are case-insensitive
        ("https://a.example.com", True),
        ("https://a.b.example.com", True),
        ("https://example.com", False),  # the wildcard needs a subdomain
        ("https://evilexample.com", False),
        ("https://app.example.com.evil.net", False),  # prefix trick
        ("https://a.example.com.evil.net", False),
        ("https://evil.net/.example.com", False),
        ("https://evil.net?.example.com", False),
        ("https://user@a.example.com", False),
        ("http://app.example.com", False),  # scheme mismatch
        ("http://a.example.com", False),
        ("https://a.example.com:8443", False),  # port mismatch
        ("https://app.example.com:8443", False),
        ("https://.example.com", False),
        ("https://a..example.com", False),
        ("http://localhost:8080", True),
        ("http://localhost", False),
        ("http://localhost:80800", False),
        ("https://localhost:8080", False),
        ("https://review-42.example.dev", True),
        ("https://review-.example.dev", False),
        ("https://review-42.example.dev.evil.net", False),  # regex is a full match
        ("https://evil.net#https://review-42.example.dev", False),
        ("https://review-42xexample.dev", False),  # the dot is escaped in the pattern
        ("null", False),
        ("", False),
    ],
)
def test_allowed_origin(strict: CorsRules, origin: str, allowed: bool) -> None:
    assert strict.allowed_origin(origin) is allowed
    assert strict.allowed_origin(origin) is allowed  # second result comes from the cache


def test_regex_is_anchored_even_without_anchors() -> None:
    p = cors_rules(allow_origin_regex=["https://good"])
    assert p.allowed_origin("https://good")
    assert not p.allowed_origin("https://good.evil.net")
    assert not p.allowed_origin("https://evil.net/https://good")


def test_wildcard_keeps_its_port() -> None:
    p = cors_rules(allow_origins=["http://*.dev.test:3000"])
    assert p.allowed_origin("http://a.dev.test:3000")
    assert not p.allowed_origin("http://a.dev.test")
    assert not p.allowed_origin("http://a.dev.test:30000")


def test_configured_default_port_matches_what_browsers_send() -> None:
    p = cors_rules(allow_origins=["https://app.example.com:443"])
    assert p.allowed_origin(APP)


def test_no_origins_configured_allows_nothing() -> None:
    p = cors_rules()
    assert not p.allowed_origin(APP)


def test_star_allows_anything(public: CorsRules) -> None:
    assert public.allowed_origin("https://anything.test")
    assert public.allowed_origin("null")


def test_overlong_origin_is_refused_and_cache_stays_bounded(strict: CorsRules) -> None:
    assert not strict.allowed_origin("https://" + "a." * 400 + "example.com")
    for i in range(3000):
        strict.allowed_origin(f"https://x{i}.evil.net")
    assert len(strict._origin_cache) <= 1024
    assert strict.allowed_origin(APP)


@given(st.text(max_size=600))
def test_allowed_origin_never_raises(origin: str) -> None:
    p = cors_rules(
        allow_origins=[APP, "https://*.example.com"],
        allow_origin_regex=[r"https://review-[0-9]+\.example\.dev"],
    )
    assert p.allowed_origin(origin) in (True, False)


@given(st.from_regex(r"https://[a-z]{1,10}(\.[a-z]{1,10}){0,3}(:[0-9]{1,5})?", fullmatch=True))
def test_wildcard_matches_only_true_subdomains(origin: str) -> None:
    p = cors_rules(allow_origins=["https://*.example.com"])
    expected = origin.endswith(".example.com") and origin != "https://example.com"
    assert p.allowed_origin(origin) is expected


# --- preflight --------------------------------------------------------------------------


def test_is_preflight() -> None:
    full = request(Origin=APP, Access_Control_Request_Method="PUT")
    assert CorsRules.is_preflight("OPTIONS", full)
    assert not CorsRules.is_preflight("GET", full)
    assert not CorsRules.is_preflight("OPTIONS", request(Origin=APP))
    assert not CorsRules.is_preflight("OPTIONS", request(Access_Control_Request_Method="PUT"))


def test_preflight_allowed(strict: CorsRules) -> None:
    status, headers = strict.preflight(
        request(
            Origin=APP,
            Access_Control_Request_Method="PUT",
            Access_Control_Request_Headers="content-type, X-REQUESTED-WITH",
        )
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == APP
    assert headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, DELETE, OPTIONS"
    assert (
        headers["Access-Control-Allow-Headers"] == "Content-Type, Authorization, X-Requested-With"
    )
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Max-Age"] == "600"
    assert headers["Content-Length"] == "0"
    assert headers.getall("Vary") == [
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    ]
    assert "Access-Control-Expose-Headers" not in headers  # only on actual responses


def test_preflight_echoes_the_origin_as_sent(strict: CorsRules) -> None:
    origin = "https://Review-7.example.dev"
    status, headers = strict.preflight(request(Origin=origin, Access_Control_Request_Method="GET"))
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize(
    "req",
    [
        {"Origin": "https://evil.net", "Access-Control-Request-Method": "GET"},
        {"Origin": "https://app.example.com.evil.net", "Access-Control-Request-Method": "GET"},
        {"Origin": APP, "Access-Control-Request-Method": "PATCH"},
        {"Origin": APP, "Access-Control-Request-Method": "put"},  # methods are case-sensitive
        {"Origin": APP, "Access-Control-Request-Method": ""},
        {"Access-Control-Request-Method": "GET"},
        {
            "Origin": APP,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "content-type, x-evil",
        },
    ],
)
def test_preflight_refused_without_cors_headers(strict: CorsRules, req: dict[str, str]) -> None:
    status, headers = strict.preflight(CIMultiDictProxy(CIMultiDict(req)))
    assert status == 403
    assert not [k for k in headers if k.lower().startswith("access-control-")]
    assert headers["Content-Length"] == "0"
    assert "Origin" in headers["Vary"]


def test_preflight_refuses_a_repeated_origin(strict: CorsRules) -> None:
    req = CIMultiDict([("Origin", APP), ("Origin", "https://evil.net")])
    req["Access-Control-Request-Method"] = "GET"
    status, _ = strict.preflight(req)
    assert status == 403


def test_preflight_header_lists_may_be_split_across_fields(strict: CorsRules) -> None:
    req = CIMultiDict(
        [
            ("Origin", APP),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
            ("Access-Control-Request-Headers", " , authorization"),
        ]
    )
    assert strict.preflight(req)[0] == 204
    req.add("Access-Control-Request-Headers", "x-other")
    assert strict.preflight(req)[0] == 403


def test_preflight_with_star(public: CorsRules) -> None:
    status, headers = public.preflight(
        request(
            Origin="https://any.test",
            Access_Control_Request_Method="GET",
            Access_Control_Request_Headers="x-custom, x-other",
        )
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Allow-Headers"] == "x-custom, x-other"  # echoed
    assert "Access-Control-Allow-Credentials" not in headers


def test_preflight_without_requested_headers_omits_allow_headers(public: CorsRules) -> None:
    status, headers = public.preflight(
        request(Origin="https://x.test", Access_Control_Request_Method="GET")
    )
    assert status == 204
    assert "Access-Control-Allow-Headers" not in headers


def test_preflight_any_method_echoes_the_method() -> None:
    p = cors_rules(allow_origins=[APP], allow_methods=["*"])
    status, headers = p.preflight(request(Origin=APP, Access_Control_Request_Method="PROPFIND"))
    assert status == 204
    assert headers["Access-Control-Allow-Methods"] == "PROPFIND"


def test_preflight_without_max_age() -> None:
    p = cors_rules(allow_origins=[APP], max_age=None)
    status, headers = p.preflight(request(Origin=APP, Access_Control_Request_Method="GET"))
    assert status == 204
    assert "Access-Control-Max-Age" not in headers
    assert "Access-Control-Allow-Credentials" not in headers


# --- apply (actual responses) -----------------------------------------------------------


def upstream_response() -> CIMultiDict[str]:
    return CIMultiDict(
        [
            ("Content-Type", "application/json"),
            ("Vary", "Accept-Encoding"),
            ("Access-Control-Allow-Origin", "*"),
            ("access-control-allow-credentials", "false"),
            ("Access-Control-Expose-Headers", "X-Upstream"),
        ]
    )


def test_apply_allowed_origin(strict: CorsRules) -> None:
    response = upstream_response()
    strict.apply(request(Origin="https://a.example.com"), response)
    assert response.getall("Access-Control-Allow-Origin") == ["https://a.example.com"]
    assert response.getall("Access-Control-Allow-Credentials") == ["true"]
    assert response.getall("Access-Control-Expose-Headers") == ["X-Total-Count, X-Page-Count"]
    assert response.getall("Vary") == ["Accept-Encoding, Origin"]
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("req", [{"Origin": "https://evil.net"}, {}])
def test_apply_refused_or_absent_origin(strict: CorsRules, req: dict[str, str]) -> None:
    response = upstream_response()
    strict.apply(CIMultiDict(req), response)
    assert not [k for k in response if k.lower().startswith("access-control-")]
    assert response.getall("Vary") == ["Accept-Encoding, Origin"]


def test_apply_with_star_does_not_vary(public: CorsRules) -> None:
    for req in ({"Origin": "https://x.test"}, {}):
        response = upstream_response()
        public.apply(CIMultiDict(req), response)
        assert response.getall("Access-Control-Allow-Origin") == ["*"]
        assert "Access-Control-Allow-Credentials" not in response
        assert response.getall("Access-Control-Expose-Headers") == ["X-Total-Count"]
        assert response.getall("Vary") == ["Accept-Encoding"]


def test_apply_without_expose_headers() -> None:
    p = cors_rules(allow_origins=[APP])
    response: CIMultiDict[str] = CIMultiDict()
    p.apply(request(Origin=APP), response)
    assert dict(response) == {"Vary": "Origin", "Access-Control-Allow-Origin": APP}
