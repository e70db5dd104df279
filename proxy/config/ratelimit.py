"""The `rate_limit:` config section (top level and per route) and its resolution per route.

Top level: defaults for every route and for unmatched requests. In a route: overrides,
key by key (as `cache` does); `rate_limit: false` turns limiting off for that route.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator

from proxy.config.rates import Rate, parse_rate
from proxy.config.section import Section

# RFC 9110 §5.6.2 token: what a header name may be.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
KEY_HELP = "ip, global, bearer or header:<Header-Name>"


def _rate_text(value: str) -> str:
    return parse_rate(value).text


def _client_key(value: str) -> str:
    kind, colon, name = value.partition(":")
    kind = kind.strip().lower()
    if not colon and kind in ("ip", "global", "bearer"):
        return kind
    if colon and kind == "header":
        name = name.strip()
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{value!r}: {name!r} is not a header name")
        return f"header:{name}"
    raise ValueError(f"must be one of {KEY_HELP}, got {value!r}")


Limit = Annotated[str, AfterValidator(_rate_text)]


class RateLimitSettings(Section):
    """Every key may appear at the top level (defaults) and in a route (overrides)."""

    limits: tuple[Limit, ...] | None = Field(
        None,
        description="Rates that apply together, one per window length: `N/second`, "
        "`N/minute`, `N/hour`, `N/day` or `N/<seconds>s`.",
        examples=[["600/minute"], ["60/minute", "1000/hour"], ["10/30s"]],
    )
    key: Annotated[str, AfterValidator(_client_key)] = Field(
        "ip",
        description="Who a client is: `ip`, `header:<Name>` (its value, hashed), `bearer` "
        "(the bearer token, hashed) or `global` (one counter for all); a request without the "
        "header or token counts by `ip`.",
        examples=["ip", "header:X-Api-Key", "bearer"],
    )
    on_store_error: Literal["local", "allow", "deny"] = Field(
        "local",
        description="When Redis fails: `local` limits with per-process windows, `allow` lets "
        "requests through, `deny` answers 503.",
    )
    # proxy/edge/ratelimit/memory.py keeps them; idle ones are dropped first.
    max_clients: int = Field(
        100_000,
        ge=1,
        description="Clients tracked in memory per limiter (top level only).",
    )
    ipv6_prefix: int = Field(
        64,
        ge=16,
        le=128,
        description="An IPv6 client is its network of this many bits (16 to 128): one host "
        "may send from any address in its /64.",
    )

    @field_validator("limits")
    @classmethod
    def _distinct_windows(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one rate (or use `rate_limit: false`)")
        seen: dict[int, str] = {}
        for text in value:
            rate = parse_rate(text)
            if rate.window in seen:
                raise ValueError(
                    f"{text!r} and {seen[rate.window]!r} have the same window: keep the "
                    "smaller, it is the one that applies"
                )
            seen[rate.window] = text
        return value


@dataclass(frozen=True, slots=True)
class LimiterSettings:
    """One limiter's resolved settings: what `RateLimiter` is built from."""

    name: str  # "default" or "route:<name>": the counters' identity
    rates: tuple[Rate, ...]
    key: str  # ip | global | bearer | header:<Name>
    on_store_error: str
    max_clients: int
    ipv6_prefix: int = 64


def resolve(
    name: str, top: RateLimitSettings | None, route: RateLimitSettings | None
) -> LimiterSettings | None:
    """The route's own keys over the top level's; None: not limited."""
    if route is not None and not route.enabled:
        return None
    if route is None and (top is None or not top.enabled):
        return None
    merged: dict[str, Any] = {}
    for layer in (top, route):
        if layer is not None:
            merged.update({k: getattr(layer, k) for k in layer.model_fields_set})
    settings = RateLimitSettings.model_validate(merged)
    if not settings.limits:
        return None
    return LimiterSettings(
        name=name,
        rates=tuple(parse_rate(text) for text in settings.limits),
        key=settings.key,
        on_store_error=settings.on_store_error,
        max_clients=top.max_clients if top is not None else settings.max_clients,
        ipv6_prefix=settings.ipv6_prefix,
    )


def route_problems(
    top: RateLimitSettings | None,
    routes: Sequence[RateLimitSettings | None],
    *,
    every_route_known: bool = True,
) -> list[tuple[str, str]]:
    """What only the whole config shows: a route with nothing to limit by, misplaced keys.

    (key path, message) pairs. `every_route_known` is false when some route's section did not
    validate: "no limits anywhere" cannot be said then, that section may hold some."""
    problems: list[tuple[str, str]] = []
    top_limits = top is not None and top.limits

    def problem(i: int | None, message: str) -> None:
        problems.append(("rate_limit" if i is None else f"routes[{i}].rate_limit", message))

    for i, section in enumerate(routes):
        if section is None:
            continue
        if "max_clients" in section.model_fields_set:
            problem(i, "max_clients bounds every limiter alike: set it in the top-level rate_limit")
        if section.enabled and section.limits is None and not top_limits:
            problem(i, "no limits to apply: set `limits` here or in the top-level rate_limit")
    if (
        every_route_known
        and top is not None
        and top.enabled
        and not top_limits
        and not any(r is not None and r.limits for r in routes)
    ):
        problem(None, "no limits anywhere: list some in `limits` (e.g. ['100/minute'])")
    return problems
