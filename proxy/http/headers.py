"""Header hygiene for forwarding (RFC 9110 §7.6): pure functions, no I/O."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Self, TypeVar

from multidict import CIMultiDict, CIMultiDictProxy, istr

from proxy.http.clientaddr import forwarded_node
from proxy.http.head import FieldBlock, Forwarding

Headers = CIMultiDict[str] | CIMultiDictProxy[str]

VIA = "1.1 cacheproxy"

# RFC 9110 §7.6.1 plus the de-facto ones every proxy strips (Proxy-Connection, Keep-Alive).
# Proxy-Authorization/-Authenticate are meant for this hop, not the origin's.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)

# Set by the proxy itself from the connection it forwards on. X-Forwarded-Host is always
# decided by ForwardingRules, never copied from the client as such.
_REQUEST_OWN = frozenset({"host", "expect", "content-length", "x-forwarded-host"})

# What a client may claim about itself or the hops before us: believed only from a trusted
# proxy (`trusted_proxies`), otherwise dropped. Frameworks read these for the client address
# (X-Real-IP, True-Client-IP, ...), the scheme (Rack: X-Forwarded-Scheme/-Ssl) and the
# host and path they build absolute links from.
CLIENT_FORWARDING = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
    }
)

# Headers with which origins let a request say it is another URL, method or host. Unkeyed,
# one client's response is stored for everyone (web cache poisoning, CPDoS), so they are not
# forwarded on fetches whose response may be stored unless the route keys by them.
# URL: X-Original-URL / X-Rewrite-URL (Symfony, Zend, IIS; Fastly's 2018 advisory),
# X-Original-URI (nginx auth_request), X-Forwarded-Prefix/-Path (Spring, ASP.NET path base).
# Method: the CPDoS "HTTP Method Override" headers, plus X-Original-Method.
# Host: X-Host, X-Forwarded-Server, X-HTTP-Host-Override (Kettle, Practical Web Cache
# Poisoning, 2018), X-Original-Host.
OVERRIDE_HEADERS = frozenset(
    {
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
        "x-forwarded-prefix",
        "x-forwarded-path",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-method",
        "x-host",
        "x-forwarded-server",
        "x-http-host-override",
        "x-original-host",
    }
)


# What only the client's own response depends on: on a fetch that fills the cache we want
# the full response to store, and we serve the client's conditions and ranges ourselves
# from it (as Varnish does). Such a fetch sends the stored entry's validators instead.
CLIENT_CONDITIONS = frozenset(
    {"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "range", "if-range"}
)

# Client fields the proxy adds its own hop to, or reads before it adds its own.
_MERGED = frozenset(
    {"via", "x-forwarded-for", "forwarded", "x-forwarded-proto", "x-forwarded-host"}
)
_NOTHING: dict[str, list[str]] = {}

# CGI, WSGI (wsgiref, gunicorn before 22), PHP and Rack name headers HTTP_X_FORWARDED_FOR,
# so `X_Forwarded_For` reaches the application as `X-Forwarded-For`. An underscore spelling
# of a field the proxy sets, strips or reads is never forwarded, from anyone, on any route.
MANAGED = (
    HOP_BY_HOP | _REQUEST_OWN | CLIENT_FORWARDING | OVERRIDE_HEADERS | CLIENT_CONDITIONS | _MERGED
)


# Compared and hashed as itself: request_fields' memo keys on it every request (hashing the
# fields cost ~1.3k instructions a miss), and rules a reload builds anew are another key.
@dataclass(frozen=True, slots=True, eq=False)
class ForwardingRules:
    """What one kind of upstream request may carry from the client; built at start-up."""

    drop_untrusted: frozenset[str]  # request headers dropped when the peer is not trusted
    drop_trusted: frozenset[str]  # ... and when it is
    public_host: str | None  # `listen.public_host`: the X-Forwarded-Host, always
    host_as_forwarded_host: bool  # may the client's Host become X-Forwarded-Host?
    # Drop every field whose name holds an underscore but these (lower-case): on fetches
    # by the cache, unless the route allows them. None: keep them (but MANAGED spellings).
    underscores_kept: frozenset[str] | None = None
    # The two drop sets plus CLIENT_CONDITIONS, for fetches sent with validators of our own.
    validating_untrusted: frozenset[str] = field(init=False, repr=False, compare=False)
    validating_trusted: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "validating_untrusted", self.drop_untrusted | CLIENT_CONDITIONS)
        object.__setattr__(self, "validating_trusted", self.drop_trusted | CLIENT_CONDITIONS)

    @classmethod
    def build(
        cls, public_host: str | None, key_headers: tuple[str, ...] | None, underscores: bool = False
    ) -> Self:
        """`key_headers` None: nothing fetched under these rules is stored.

        Then the client's Host goes upstream as X-Forwarded-Host, as every reverse proxy
        does: the response goes to that client alone, so a lying Host only fools itself.
        Otherwise only what the cache key holds may shape the response: Host only when the
        route keys by Host, a trusted proxy's X-Forwarded-Host only when keyed by it,
        override headers only when keyed by them, and names with an underscore (which an
        origin may read as another field) only when keyed by them or `underscores` is set.
        """
        own = HOP_BY_HOP | _REQUEST_OWN
        if key_headers is None:
            return cls(own | CLIENT_FORWARDING, own - {"x-forwarded-host"}, public_host, True)
        keyed = frozenset(h.lower() for h in key_headers)
        trusted = own | (OVERRIDE_HEADERS - keyed)
        if "x-forwarded-host" in keyed:
            trusted -= {"x-forwarded-host"}
        kept = None if underscores else frozenset(h for h in keyed if "_" in h)
        return cls(trusted | CLIENT_FORWARDING, trusted, public_host, "host" in keyed, kept)


def _connection_tokens(headers: Headers) -> frozenset[str]:
    """Header names listed in Connection are hop-by-hop too (§7.6.1)."""
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return frozenset(tokens)


def _copy_end_to_end(headers: Headers) -> CIMultiDict[str]:
    # A copy less the hop-by-hop fields it has, asked for by istr: a third of the cost of
    # filtering every field by its lower-cased name. Repeated fields (Set-Cookie, Via, ...)
    # keep their order.
    out = CIMultiDict(headers)
    for name in _HOP_BY_HOP_NAMES:
        if name in out:
            out.popall(name)
    if _CONNECTION in headers:
        for token in _connection_tokens(headers):
            out.popall(token, None)
    return out


def _append(headers: CIMultiDict[str], name: str, value: str) -> None:
    if name not in headers:  # most often: no list to make, nothing to pop
        headers[name] = value
        return
    existing = headers.getall(name)
    headers.popall(name)
    headers[name] = ", ".join([*existing, value])


_CONNECTION, _VIA = istr("Connection"), istr("Via")
_HOP_BY_HOP_NAMES = tuple(istr(name) for name in sorted(HOP_BY_HOP))


# Memos of field names (here for a client's, respond/head.py for an origin's): what is done
# with a field, by its name as spelled, looked up rather than worked out again for every
# field (a name's lower() and the tests on it were most of a field's cost). Past _NAMES_KEPT
# names a memo keeps no more, and new ones are worked out each time; names longer than
# NAME_KEPT_MAX (none a client or origin sends in earnest) are never kept: a memo holds at
# most ~32 KiB.
_NAMES_KEPT = 512
NAME_KEPT_MAX = 64
_Kind = TypeVar("_Kind")


def keep_kind(kinds: dict[str, _Kind], name: str, kind: _Kind) -> None:
    """Remember `kind` for fields named `name` in a memo of field names, within its bounds."""
    if len(kinds) < _NAMES_KEPT and len(name) <= NAME_KEPT_MAX:
        kinds[name] = kind


# What request_fields does with a client's field: "" sends it on, _DROP drops it, a name of
# _MERGED (lower case) merges it with the proxy's own line.
_DROP = "-"


@functools.lru_cache(maxsize=64)
def _request_kinds(
    drop: frozenset[str], kept: frozenset[str] | None, own_field: str
) -> dict[str, str]:
    # One memo per set of request_fields' rules: a few per route (and per set of fields a
    # client lists in Connection).
    return {}


def _request_kind(
    lower: str, drop: frozenset[str], kept: frozenset[str] | None, own_field: str
) -> str:
    """What request_fields does with a field named `lower` (lower case)."""
    if lower in drop or lower == own_field:
        return _DROP
    if "_" in lower and (
        (kept is not None and lower not in kept)
        or (dashed := lower.replace("_", "-")) in MANAGED
        or dashed == own_field
    ):
        return _DROP
    return lower if lower in _MERGED else ""


def request_fields(
    headers: Headers,
    rules: ForwardingRules,
    *,
    peer: str | None,
    peer_trusted: bool,
    proto: str,
    client_host: str | None,
    upstream_host: str,
    validating: bool = False,
    own_field: str = "",
) -> list[str]:
    """The header lines (`Name: value`, no CRLF) to send upstream for a client request.

    One pass over the client's fields, straight to the lines of the request head (framing
    fields, Content-Length or Transfer-Encoding, are the connection's: http1.py adds them).
    `peer` is the socket peer; `client_host` the Host the client asked for (None for an
    absolute-form target, whose Host header RFC 9112 §3.2.2 says to ignore). `validating`:
    the client's conditions and ranges are dropped (the caller adds validators of its own).
    `own_field`: a field (lower case) the caller sets itself: the client's is dropped, in any
    spelling (CGI-style origins read X_Request_ID as X-Request-ID).
    """
    # A field block the listener read (head.py) forwards the same way request after request:
    # all but the peer's lines are made once per set of the other inputs (a reload's new
    # rules, a peer trusted or not, are other keys), and kept while the block is.
    memo = headers.forwarded if type(headers) is FieldBlock else None
    key = (rules, peer_trusted, proto, client_host, upstream_host, validating, own_field)
    made = None if memo is None else memo.get(key)
    if made is None:
        made = _forwarding(headers, *key)
        if memo is not None:
            if len(memo) >= FORWARDED_KEPT:
                memo.clear()
            memo[key] = made
    before, chain, forwarded, after = made
    lines = before.copy()  # the caller's to append to
    if peer:
        # From an untrusted peer the client's chain was dropped: the peer is all we know.
        lines.append(f"X-Forwarded-For: {chain}, {peer}" if chain else f"X-Forwarded-For: {peer}")
        if forwarded:  # a trusted chain: add our hop, as RFC 7239 §4 asks
            lines.append(f"Forwarded: {forwarded}, for={forwarded_node(peer)}")
    else:
        if chain:
            lines.append(f"X-Forwarded-For: {chain}")
        if forwarded:
            lines.append(f"Forwarded: {forwarded}")
    lines += after
    return lines


# Entries of one block's memo (a few routes' rules, validating or not, trusted or not);
# past it the memo starts over. With head.FORWARDED_BLOCK_MAX and head._BLOCKS_MAX it
# bounds what the memos hold (~4 MiB at most).
FORWARDED_KEPT = 8


def _forwarding(
    headers: Headers,
    rules: ForwardingRules,
    peer_trusted: bool,
    proto: str,
    client_host: str | None,
    upstream_host: str,
    validating: bool,
    own_field: str,
) -> Forwarding:
    if validating:
        drop = rules.validating_trusted if peer_trusted else rules.validating_untrusted
    else:
        drop = rules.drop_trusted if peer_trusted else rules.drop_untrusted
    if _CONNECTION in headers:
        drop = drop | _connection_tokens(headers)
        # Rules the client made: not kept, or clients could make memo after memo.
        kinds: dict[str, str] = {}
    else:
        kinds = _request_kinds(drop, rules.underscores_kept, own_field)
    before = [f"Host: {upstream_host}"]
    merged = _NOTHING
    # Joined, not formatted: the names are multidict's `istr`s, which an f-string copies
    # through format() (~1k instructions a field).
    for item in headers.items():
        kind = kinds.get(item[0])
        if kind is None:
            kind = _request_kind(item[0].lower(), drop, rules.underscores_kept, own_field)
            keep_kind(kinds, item[0], kind)
        if not kind:
            before.append(": ".join(item))
        elif kind is not _DROP:  # one of _MERGED, by its lower-case name
            if merged is _NOTHING:
                merged = {}
            merged.setdefault(kind, []).append(item[1])
    # Repeated lines of one field are one comma-separated list (RFC 9110 §5.3).
    chain = merged.get("x-forwarded-for")
    forwarded = merged.get("forwarded")
    after = []
    schemes = merged.get("x-forwarded-proto")  # a trusted proxy knows the client's scheme
    if schemes:
        after += [f"X-Forwarded-Proto: {s}" for s in schemes]
    else:
        after.append(f"X-Forwarded-Proto: {proto}")
    hosts = merged.get("x-forwarded-host")  # only ever kept from a trusted proxy
    if rules.public_host is not None:
        after.append(f"X-Forwarded-Host: {rules.public_host}")
    elif hosts:
        after += [f"X-Forwarded-Host: {h}" for h in hosts]
    elif client_host and rules.host_as_forwarded_host:
        after.append(f"X-Forwarded-Host: {client_host}")
    via = merged.get("via")
    after.append(f"Via: {', '.join(via)}, {VIA}" if via else _VIA_LINE)
    return (
        before,
        ", ".join(chain) if chain else None,
        ", ".join(forwarded) if forwarded else None,
        after,
    )


_VIA_LINE = f"Via: {VIA}"


def forward_response_headers(headers: Headers) -> CIMultiDict[str]:
    """Headers to send the client for an upstream response."""
    out = _copy_end_to_end(headers)
    _append(out, _VIA, VIA)
    return out
