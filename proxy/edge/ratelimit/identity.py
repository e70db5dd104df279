"""Who a request counts against, per the limiter's `key`: ip, global, bearer, header:<Name>.

`ip` is the socket peer, or, when that peer is a trusted proxy, the client it vouches for
in `X-Forwarded-For` / `Forwarded` (proxy/http/clientaddr.py: the right-most untrusted hop, so
a client cannot spoof its way out of a limit); an IPv6 client is its /`ipv6_prefix` network.
`bearer` (read as proxy/http/credentials.py reads it) and header keys are hashed before anything
keeps them; a request without the key falls back to its `ip`.

Identities never collide across kinds: addresses contain `.` or `:`, digests are hex.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from proxy.cache.keys import hash_secret
from proxy.http import credentials
from proxy.http.clientaddr import (
    ClientKeys,
    TrustedProxies,
    address_key,
    client_address,
    parse_address,
)

Identify = Callable[[web.BaseRequest], str]

_MEMO_SIZE = 4096  # per memo; cleared when full
_MEMO_CHAIN = 256  # forwarded chains longer than this (characters) are not memoised


class _ByAddress:
    """The trusted client address, remembered per peer and per forwarded chain.

    Deciding costs ~3 µs per peer and ~12 µs per chain; the results repeat request after
    request, so they are kept (bounded) instead of recomputed on every hit.
    """

    def __init__(self, trusted: TrustedProxies, keys: ClientKeys) -> None:
        self._trusted = trusted
        self._keys = keys
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
            if self._trusted.trusts_address(parsed):
                address = None
            else:
                address = peer if parsed is None else address_key(parsed, self._keys.v6_prefix)
            self._peers[peer] = address
        if address is not None:
            return address
        h = request.headers
        chain = (peer, tuple(h.getall("X-Forwarded-For", ())), tuple(h.getall("Forwarded", ())))
        client = self._chains.get(chain)
        if client is None:
            client = self._keys(client_address(peer, chain[1], chain[2], self._trusted) or peer)
            if sum(map(len, chain[1])) + sum(map(len, chain[2])) <= _MEMO_CHAIN:
                if len(self._chains) >= _MEMO_SIZE:
                    self._chains.clear()
                self._chains[chain] = client
        return client


def identify(key: str, trusted: TrustedProxies, v6_prefix: int = 64) -> Identify:
    """The function that names a request's client under `key` (validated by the config)."""
    if key == "global":
        return lambda _: "global"
    keys = ClientKeys(v6_prefix)
    if trusted:
        by_address: Identify = _ByAddress(trusted, keys)
    else:

        def by_address(request: web.BaseRequest) -> str:
            remote = request.remote or ""
            return keys(remote) if ":" in remote else remote  # IPv4 without a call

    if key == "ip":
        return by_address
    if key == "bearer":

        def by_bearer(request: web.BaseRequest) -> str:
            auth = request.headers.get("Authorization")
            if auth is not None:
                token = credentials.bearer(auth)
                if token is not None:
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
