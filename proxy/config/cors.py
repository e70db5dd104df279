"""The `cors:` section, top level or per route; the rules built from it are proxy/edge/cors.py's."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from proxy.config import regex
from proxy.config.durations import WholeSeconds
from proxy.config.section import Section

# scheme://host[:port] or scheme://*.domain[:port], matched against the lowercased text.
# Hosts are ASCII: browsers send IDNs in punycode.
ORIGIN_RE = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<wild>\*\.)?"
    r"(?P<host>[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2


def _check_origin(value: str) -> str:
    origin = value.strip().lower()
    if origin == "*":
        return origin
    match = ORIGIN_RE.fullmatch(origin)
    if match is None:
        raise ValueError(
            f"invalid origin {value!r}: expected '*', scheme://host[:port] or "
            "scheme://*.domain[:port] (an origin has no path, not even a trailing slash)"
        )
    scheme, port = match["scheme"], match["port"]
    if match["wild"] and match["host"].startswith("["):
        raise ValueError(f"invalid origin {value!r}: a wildcard needs a domain name")
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"invalid origin {value!r}: port out of range")
    if port is not None and _DEFAULT_PORTS.get(scheme) == port:
        # Browsers never serialize a default port, so keeping it would never match.
        origin = origin[: -len(port) - 1]
    return origin


def _check_token(value: str) -> str:
    value = value.strip()
    if not _TOKEN_RE.fullmatch(value):
        raise ValueError(f"invalid name {value!r}: not an HTTP token")
    return value


def _check_method(value: str) -> str:
    # Methods are case-sensitive on the wire; configs are written in any case but mean
    # the conventional upper-case methods.
    return _check_token(value).upper()


Origin = Annotated[str, AfterValidator(_check_origin)]
OriginRegex = Annotated[str, AfterValidator(regex.check)]  # RE2: linear time
Method = Annotated[str, AfterValidator(_check_method)]
HeaderName = Annotated[str, AfterValidator(_check_token)]


class CorsSettings(Section):
    """`cors:` block. Origins are stored normalized (lowercase, default port dropped)."""

    # The published schema keeps the name editors already know.
    model_config = ConfigDict(title="CorsConfig")

    allow_origins: tuple[Origin, ...] = Field(
        (),
        description="Origins allowed: `scheme://host[:port]` (no path, not even a trailing "
        "slash), `scheme://*.domain` for any subdomain, or `*` for any origin.",
        examples=[["https://app.example.com", "https://*.example.com"]],
    )
    allow_origin_regex: tuple[OriginRegex, ...] = Field(
        (),
        description="Origins allowed by a regular expression (RE2 syntax) that must match "
        "the whole origin.",
        examples=[["https://review-[0-9]+\\.example\\.dev"]],
    )
    allow_methods: tuple[Method, ...] = Field(
        ("GET", "HEAD", "POST"),
        description="Methods a cross-origin request may use; `*`: any.",
        examples=[["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]],
    )
    allow_headers: tuple[HeaderName, ...] = Field(
        (),
        description="Request headers a cross-origin request may send; `*`: any.",
        examples=[["Content-Type", "Authorization", "X-Requested-With"]],
    )
    expose_headers: tuple[HeaderName, ...] = Field(
        (),
        description="Response headers scripts of the allowed origins may read.",
        examples=[["X-Total-Count", "X-RateLimit-Remaining"]],
    )
    allow_credentials: bool = Field(
        False,
        description="Let browsers send cookies and credentials cross-origin; never with `*` "
        "in the lists above.",
    )
    max_age: WholeSeconds | None = Field(
        default=600,
        ge=0,
        description="Whole seconds browsers may reuse a preflight answer; none: no "
        "Access-Control-Max-Age header.",
        examples=[600, "10m"],
    )

    @model_validator(mode="after")
    def _no_wildcards_with_credentials(self) -> CorsSettings:
        # Browsers reject `*` on credentialed requests (Fetch §3.2.5); echoing any origin
        # with credentials instead would hand every site the user's session.
        if not self.allow_credentials:
            return self
        for name in ("allow_origins", "allow_methods", "allow_headers", "expose_headers"):
            if "*" in getattr(self, name):
                raise ValueError(
                    f"{name}: ['*'] cannot be combined with allow_credentials: true; "
                    "list the allowed values explicitly"
                )
        return self
