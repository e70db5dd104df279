"""Who a request counts against, per the limiter's `key`: ip, global, bearer, header:<Name>.

`ip` is the socket peer, or, when that peer is a trusted proxy, the client it vouches for
in `X-Forwarded-For` / `Forwarded` (proxy/clientaddr.py: the right-most untrusted hop, so
a client cannot spoof its way out of a limit). `bearer` and header keys are hashed before
anything keeps them; a request without the key falls back to its `ip`.

Identities never collide across kinds: addresses contain `.` or `:`, digests are hex.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from proxy.cache.keys import hash_secret
from proxy.clientaddr import TrustedProxies, client_address, parse_address

Identify = Callable[[web.BaseRequest], str]

_MEMO_SIZE = 4096  # per memo; cleared when full
_MEMO_CHAIN = 256  # forwarded chains longer than this (characters) are not memoised


class _ByAddress:
    """The trusted client address, remembered per peer and per forwarded chain.

    Deciding costs ~3 µs per peer and ~12 µs per chain; the answers repeat request after
    request, so they are kept (bounded) instead of recomputed on every hit.
    """

    def __init__(self, trusted: TrustedProxies) -> None:
        self._trusted = trusted
        self._peers: dict[str, str | None] = {}  # peer -> its address; None: trusted proxy
        self._chains: dict[tuple[str, tuple[str, ...], tuple[str, ...]], str] = {}

    def __call__(self, request: web.BaseRequest) -> str:
        peer = request.remote
        if peer is None:
            return ""
        try:
            address = self._peers[peer]
        except KeyError:
            if len(self._peers) >= _MEMO_SIZE:
                self._peers.clear()
            parsed = parse_address(peer)
            address = None if self._trusted.trusts_address(parsed) else str(parsed or peer)
            self._peers[peer] = address
        if address is not None:
            return address
        h = request.headers
        chain = (peer, tuple(h.getall("X-Forwarded-For", ())), tuple(h.getall("Forwarded", ())))
        client = self._chains.get(chain)
        if client is None:
            client = client_address(peer, chain[1], chain[2], self._trusted) or peer
            if sum(map(len, chain[1])) + sum(map(len, chain[2])) <= _MEMO_CHAIN:
                if len(self._chains) >= _MEMO_SIZE:
                    self._chains.clear()
                self._chains[chain] = client
        return client


def identify(key: str, trusted: TrustedProxies) -> Identify:
    """The function that names a request's client under `key` (validated by the config)."""
    if key == "global":
        return lambda _: "global"
    if trusted:
        by_address: Identify = _ByAddress(trusted)
    else:
        by_address = lambda request: request.remote or ""  # noqa: E731
    if key == "ip":
        return by_address
    if key == "bearer":

        def by_bearer(request: web.BaseRequest) -> str:
            auth = request.headers.get("Authorization")
            if auth is not None:
                scheme, _, token = auth.strip().partition(" ")
                token = token.strip()
                if token and scheme.lower() == "bearer":
                    return hash_secret(token)
            return by_address(request)

        return by_bearer
    name = key.removeprefix("header:")

    def by_header(request: web.BaseRequest) -> str:
        value = request.headers.get(name)
        if value:
            return hash_secret(value)
        return by_address(request)

    return by_header
