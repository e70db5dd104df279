"""The revocation endpoints of the admin API: `POST /tokens/revoke` and
`GET /tokens/revoked/count`, and the revoke body they take (which a supervisor of workers
reads too, to keep revocations for the workers it starts later).

The list itself is proxy/edge/revocation.py's, its Redis copy
proxy/shared/revocation_follower.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from proxy.cache.memory import StoreUnavailable
from proxy.edge.revocation import (
    MAX_JTI,
    MAX_TOKEN,
    MAX_TTL,
    RevocationList,
    jti_member,
    token_member,
)
from proxy.http.errors import json_error

log = logging.getLogger("cacheproxy.revocation")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# (member, ttl) -> expiry, or None when the list is full; StoreUnavailable: revoked here only.
Revoke = Callable[[str, float], Awaitable[float | None]]


def admin_routes(revocations: RevocationList, revoke: Revoke) -> list[tuple[str, str, Handler]]:
    """`POST /tokens/revoke` and `GET /tokens/revoked/count` (the admin app guards them).
    `revoke`: through Redis when there is one, else `revocations.revoke`."""

    async def revoke_token(request: web.Request) -> web.StreamResponse:
        parsed = parse_revocation(await request.read())
        if isinstance(parsed, str):
            return json_error(400, "bad_request", parsed)
        member, ttl = parsed
        try:
            expiry = await revoke(member, ttl)
        except StoreUnavailable:
            return json_error(
                503,
                "store_unavailable",
                "revoked on this instance only: Redis is unavailable, retry to share it",
            )
        if expiry is None:
            limit = revocations.settings.max_entries
            return json_error(507, "list_full", f"the revocation list holds {limit} entries")
        log.info("revoked %s until %.0f", member[:10], expiry)
        body = {"revoked": True, "expires_at": int(expiry), "count": revocations.count()}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def count(_: web.Request) -> web.StreamResponse:
        body = {"count": revocations.count()}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    return [("POST", "/tokens/revoke", revoke_token), ("GET", "/tokens/revoked/count", count)]


def parse_revocation(body: bytes) -> tuple[str, float] | str:
    """(member, ttl) of a `POST /tokens/revoke` body, or what is wrong with it."""
    try:
        spec = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "body must be JSON"
    problem = _check_spec(spec)
    if problem:
        return problem
    member = token_member(spec["token"]) if "token" in spec else jti_member(spec["jti"])
    return member, float(spec["ttl"])


def _check_spec(spec: object) -> str | None:
    if not isinstance(spec, dict):
        return 'give {"token": ..., "ttl": seconds} or {"jti": ..., "ttl": seconds}'
    kinds = [k for k in ("token", "jti") if k in spec]
    extra = set(spec) - {"token", "jti", "ttl"}
    if len(kinds) != 1 or extra:
        return 'give exactly one of "token", "jti", and "ttl" (seconds)'
    value = spec[kinds[0]]
    bound = MAX_TOKEN if kinds[0] == "token" else MAX_JTI
    if not isinstance(value, str) or not value.strip() or len(value) > bound:
        return f'"{kinds[0]}" must be a non-empty string of at most {bound} characters'
    if kinds[0] == "token" and any(c.isspace() for c in value):
        return '"token" must be the token alone, without "Bearer " or spaces'
    ttl = spec.get("ttl")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL:
        return f'"ttl" must be a number of seconds, more than 0 and at most {int(MAX_TTL)}'
    return None
