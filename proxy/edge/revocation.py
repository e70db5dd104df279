"""Token revocation at the edge: requests bearing a revoked bearer token get a 401.

Revoked tokens are kept as digests (`t:<sha256>`), JWTs may also be revoked by their `jti`
(`j:<sha256>`); neither a token nor a jti is ever stored, logged or sent back in clear.

The check runs on every request with `Authorization: Bearer`, cache hits included, so it
never waits on Redis: each process keeps this list, a mirror of the revoked set (digest ->
expiry, epoch seconds), and checks requests against it alone. I/O-free. With Redis the set
lives there, shared by every instance, and proxy/shared/revocation_follower.py keeps this
mirror in step with it; without Redis the mirror is the list, and with `workers: N` the
supervisor keeps a copy and hands it to each worker it starts (server/supervisor.py), so a
restart forgets nothing. Revoking through the admin API: proxy/admin/revocation.py.

Until the first load from Redis, a process knows only what it was handed:
`before_sync: serve` serves and reports it in /health, `refuse` responds 503 to requests
carrying a bearer token.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

from proxy.cache.keys import hash_secret
from proxy.config.revocation import RevocationSettings
from proxy.http import credentials
from proxy.http.errors import json_error

MAX_TTL = 366 * 86400.0
MAX_TOKEN = 16 * 1024  # longer bearer tokens are not decoded as JWTs
MAX_JTI = 1024
SYNC_RETRY_AFTER = 5  # seconds, on the 503 of `before_sync: refuse`


bearer_token = credentials.bearer  # `Bearer<TAB>x` is `x`, as origins that split read it


def jwt_id(token: str) -> str | None:
    """The `jti` claim of a JWS compact token, decoded without verification; None if none.

    Safe because revocation only ever denies. Bounded and strict: at most 16 KiB, three
    base64url parts, a JSON object payload, a string jti of at most 1 KiB; anything else
    (JWE, garbage, deep nesting, a non-UTF-8 payload) is simply not a JWT here.
    """
    if len(token) > MAX_TOKEN or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        raw = base64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_", validate=True)
        claims = orjson.loads(raw)
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI:
        return None
    return jti


def token_member(token: str) -> str:
    return "t:" + hash_secret(token)


def jti_member(jti: str) -> str:
    return "j:" + hash_secret(jti)


class RevocationList:
    """This process's revoked set: what every request is checked against."""

    def __init__(
        self,
        settings: RevocationSettings,
        clock: Callable[[], float] = time.time,
        *,
        synced: bool = True,
    ) -> None:
        """`synced` False: a master copy (Redis) holds the list and is still to be loaded."""
        self.settings = settings
        self._clock = clock
        self._tokens: dict[str, float] = {}  # "t:<digest>" -> expiry (epoch seconds)
        self._jtis: dict[str, float] = {}  # "j:<digest>" -> expiry
        # Anything to check at all (entries, or bearer requests to refuse until the list is
        # loaded): the hot path reads only this.
        self.any = False
        self.synced = synced
        self.refused = 0
        self._update_any()

    # --- the request path ---------------------------------------------------

    def check(self, headers: CIMultiDictProxy[str]) -> web.Response | None:
        """The response to a request whose bearer token the list refuses; None to go on.

        The pipeline has refused requests with more than one Authorization field already.
        """
        value = headers.get("Authorization")
        if value is None:
            return None
        parsed = credentials.parse(value)
        if parsed is None or parsed.scheme != "bearer" or not parsed.words:
            return None
        if not self.synced and self.settings.before_sync == "refuse":
            return json_error(
                503,
                "revocation_list_unavailable",
                "revoked tokens cannot be checked yet: the list has not been loaded",
                {"Retry-After": str(SYNC_RETRY_AFTER)},
            )
        if len(parsed.words) > 1:
            # Not a token68 (RFC 6750 §2.1): which word an origin takes cannot be told.
            return json_error(
                400, "bad_request", "malformed bearer credentials: the token has spaces in it"
            )
        return self.refusal() if self.revoked(parsed.words[0]) else None

    def revoked(self, token: str) -> bool:
        if self._tokens and self._active(self._tokens, token_member(token)):
            return True
        if self._jtis:
            jti = jwt_id(token)
            if jti is not None and self._active(self._jtis, jti_member(jti)):
                return True
        return False

    def refusal(self) -> web.Response:
        self.refused += 1
        return json_error(
            401,
            "token_revoked",
            "this bearer token has been revoked",
            {"WWW-Authenticate": 'Bearer error="invalid_token", error_description="revoked"'},
        )

    def _active(self, entries: dict[str, float], member: str) -> bool:
        expiry = entries.get(member)
        if expiry is None:
            return False
        if expiry > self._clock():
            return True
        del entries[member]
        self._update_any()
        return False

    def _update_any(self) -> None:
        unsynced_refusal = not self.synced and self.settings.before_sync == "refuse"
        self.any = bool(self._tokens or self._jtis) or unsynced_refusal

    # --- changes ------------------------------------------------------------

    async def revoke(self, member: str, ttl: float) -> float | None:
        """Revoke `member` for `ttl` seconds in this process alone (without Redis): its
        expiry (epoch seconds), or None when the list is full and does not hold it yet.
        With Redis, RevocationFollower.revoke has the same contract."""
        self.sweep()
        if member not in self._entries(member) and self.count() >= self.settings.max_entries:
            return None
        expiry = self._clock() + ttl
        self.add(member, expiry)
        return expiry

    def count(self) -> int:
        self.sweep()
        return len(self._tokens) + len(self._jtis)

    def sweep(self) -> None:
        now = self._clock()
        for entries in (self._tokens, self._jtis):
            for member in [m for m, expiry in entries.items() if expiry <= now]:
                del entries[member]
        self._update_any()

    def entries(self) -> list[tuple[str, float]]:
        """Every live (member, expiry): what a worker started later is handed."""
        self.sweep()
        return [*self._tokens.items(), *self._jtis.items()]

    def load(self, entries: Iterable[tuple[str, float]]) -> None:
        """Add what another process knows (revocations are never taken back early)."""
        for member, expiry in entries:
            self.add(member, expiry)

    def add(self, member: str, expiry: float) -> None:
        """Revoke `member` until `expiry`, or longer if it already was; anything that is not
        a member, or has expired, is ignored."""
        if not member.startswith(("t:", "j:")) or expiry <= self._clock():
            return
        entries = self._entries(member)
        if entries.get(member, 0.0) < expiry:
            entries[member] = expiry
        self._update_any()

    def mark_synced(self) -> None:
        """The master copy has been loaded once: the list is whole from now on."""
        if not self.synced:
            self.synced = True
            self._update_any()

    def _entries(self, member: str) -> dict[str, float]:
        return self._tokens if member.startswith("t:") else self._jtis
