"""YAML -> typed, frozen config objects.

Every problem in a file is reported at once, each with its key path
(``routes[1].match.regex: ...``), so nobody fixes one mistake per restart.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from proxy.config import env as env_overrides
from proxy.config import keys, regex
from proxy.config.alerts import AlertSettings
from proxy.config.cache import CacheSettings, parse_size
from proxy.config.compression import CompressionSettings
from proxy.config.cors import CorsSettings
from proxy.config.durations import Duration
from proxy.config.hosts import parse_host_pattern, parse_public_host
from proxy.config.logs import LogSettings
from proxy.config.networks import parse_network
from proxy.config.ratelimit import RateLimitSettings, route_problems
from proxy.config.redis import RedisSettings
from proxy.config.request_id import RequestIdSettings
from proxy.config.revocation import RevocationSettings
from proxy.config.section import Model
from proxy.config.tls import TlsSettings
from proxy.config.tracing import TracingSettings
from proxy.config.upgrade import UpgradeSettings
from proxy.config.upstream import Upstream, UpstreamTargets, check_upstream_url

# RFC 9110 §5.6.2 token: what a method name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Keys whose values a config error never shows, wherever they come from.
_SECRET_KEY = re.compile(r"(\w*_)?(token|secret|password)", re.IGNORECASE)
# scheme://user:PASSWORD@host: the password is masked wherever a message quotes a URL. It runs
# to the last `@` before a blank or a quote, so a password with an unescaped `/` or `@` is
# masked too (at worst a port and path before an `@` in the path are masked with it).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s'\":]*:)([^\s'\"]*)@")


log = logging.getLogger("cacheproxy.config")

MAX_WORKERS = 256  # a typo such as `workers: 1000` must not start a thousand processes


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` lists every ``path: message``."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))

    def report(self) -> str:
        lines = [f"invalid config {self.source} ({len(self.problems)} problem(s)):"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def _network(value: str) -> str:
    return str(parse_network(value))


class ClientTimeouts(Model):
    """Seconds a client may take; past them its connection is closed (docs/
    protecting-the-upstream.md, "Limits and timeouts")."""

    request_head: Duration = Field(
        10.0,
        gt=0,
        description="Seconds to send a request head, from connection open or from a later "
        "request's first byte; then 408.",
        examples=[10, "5s"],
    )
    keepalive: Duration = Field(
        75.0,
        ge=0,
        description="Seconds a connection may idle between a response and the next request; "
        "0: close after each response.",
        examples=[75, "2m"],
    )
    body: Duration = Field(
        60.0,
        gt=0,
        description="Seconds without a byte while a request body is still due.",
        examples=[60, "30s"],
    )


def _some_hosts(value: tuple[str, ...] | None, omitted: str) -> tuple[str, ...] | None:
    if value == ():  # an empty list would match nothing: a typo, not a wish
        raise ValueError(f"must list at least one host name (omit it to {omitted})")
    return value


def _optional_size(value: object) -> object:
    return None if value is None else parse_size(value)


class Listen(Model):
    max_body_size: int | None = Field(
        None,
        ge=0,
        description="Bytes a request body may have on the proxy port; past them 413 "
        "`payload_too_large`, before the upstream sees a whole request (on its Content-Length "
        "at once, a chunked one as it streams). A route may set its own. None: no bound.",
        examples=["10MB", "1MB"],
    )
    _body_size = field_validator("max_body_size", mode="before")(_optional_size)
    host: str = Field(
        "127.0.0.1",
        description="Address the proxy listens on; `0.0.0.0` (or `::`) to serve other machines.",
        examples=["0.0.0.0"],
    )
    port: int = Field(8080, ge=0, le=65535, description="The proxy's port; 0: any free one.")
    # --- Host hardening (docs/security.md): kept together, at the end.
    public_host: Annotated[str, AfterValidator(parse_public_host)] | None = Field(
        None,
        description="`host[:port]` clients use for this proxy; always sent upstream as "
        "X-Forwarded-Host. None: fetches by the cache send none unless cache.key.headers lists "
        "Host (docs/security.md).",
        examples=["api.example.com", "api.example.com:8443"],
    )
    hosts: tuple[Annotated[str, AfterValidator(parse_host_pattern)], ...] | None = Field(
        None,
        description="Host names served (`*.example.com` for any subdomain; any port); other "
        "Host headers get 421 Misdirected Request. None: any Host is served.",
        examples=[["api.example.com", "*.example.com"]],
    )

    @field_validator("hosts")
    @classmethod
    def _hosts_not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _some_hosts(value, "serve any Host")

    timeouts: ClientTimeouts = Field(
        ClientTimeouts(),
        description="Seconds a client may take; past them its connection is closed.",
    )
    # Unset: proxy/server/listener.py's default_max_connections.
    max_connections: int | None = Field(
        None,
        ge=1,
        description="Client connections held at once per process; more are closed as soon as "
        "accepted. None: derived from the open-files limit, less upstream.pool and 64.",
        examples=[10000],
    )
    # nginx's limit_conn.
    max_connections_per_client: int = Field(
        256,
        ge=0,
        description="Client connections one address (the TCP peer; IPv6 by "
        "rate_limit.ipv6_prefix) may hold per process, so one client cannot take them all; "
        "trusted_proxies are exempt. 0: no bound.",
    )
    tls: TlsSettings | None = Field(
        None,
        description="HTTPS on the proxy port (HTTP/1.1, TLS 1.2 and 1.3); the certificate is "
        "re-read on reload, open connections keep theirs. The handshake counts against "
        "timeouts.request_head. None: plain HTTP.",
    )
    server_header: str | Literal[False] = Field(
        "cacheproxy",
        description="The Server field of responses the upstream gave none (and of the admin "
        "port's); the upstream's own passes through. `false` (or `off`): none. Naming no "
        "version, as nginx's `server_tokens off`, tells a scanner nothing to look up.",
        examples=["cacheproxy", False],
    )

    @field_validator("server_header", mode="before")
    @classmethod
    def _server_field(cls, value: object) -> object:
        # `off` in YAML is false already; from the environment it is the word.
        if value is False or (isinstance(value, str) and value.lower() in ("off", "false")):
            return False
        if not isinstance(value, str) or not value.strip() or value != value.strip():
            raise ValueError(
                f"must be a product name such as cacheproxy, or false for none, got {value!r}"
            )
        if any(not (" " <= c <= "~") for c in value):
            raise ValueError(f"{value!r}: a header field value of visible ASCII and spaces only")
        return value


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`; anything else (a name, `0.0.0.0`, `""`) may be public."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Purge(Model):
    allow: tuple[Annotated[str, AfterValidator(_network)], ...] = Field(
        (),
        description="Client networks (CIDRs or addresses) whose `PURGE /path` on the proxy "
        "port is carried out; anyone else needs the admin token (`Authorization: Bearer`), "
        "or gets 405. PURGE is never forwarded upstream.",
        examples=[["127.0.0.1", "10.0.0.0/8"]],
    )


class Admin(Model):
    port: int = Field(9901, ge=0, le=65535, description="The admin listener's port.")
    token: str | None = Field(
        None,
        description="When set, admin operations require `Authorization: Bearer <token>` "
        "(/livez, /readyz and /health never do); empty or none: no token.",
        examples=["${ADMIN_TOKEN}"],
    )
    # Opening the admin listener to the network without a token must be said out loud.
    allow_insecure: bool = Field(
        False,
        description="An admin.host other than loopback (127.0.0.0/8, ::1, localhost) without "
        "admin.token is a config error unless this is true.",
    )
    # After token and allow_insecure: its validator reads them.
    host: str = Field(
        "127.0.0.1",
        description="Address of the admin listener (health, stats, purge, metrics, dashboard); "
        "loopback by default. Another address needs admin.token or admin.allow_insecure.",
        examples=["0.0.0.0"],
    )

    @field_validator("token")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None  # `token: ${ADMIN_TOKEN:-}` means "no token"

    @field_validator("host")
    @classmethod
    def _loopback_or_guarded(cls, value: str, info: ValidationInfo) -> str:
        if _is_loopback(value) or info.data.get("token") or info.data.get("allow_insecure"):
            return value
        raise ValueError(
            f"{value!r} is not a loopback address and admin.token is not set: anyone who can "
            "reach it could read stats and purge the cache; set admin.token (or the "
            f"environment variable {env_overrides.variable(('admin', 'token'))}), or "
            "admin.allow_insecure: true if that is deliberate"
        )


class Match(Model):
    prefix: str | None = Field(
        None,
        description="Match paths that start with this. Exactly one of prefix, path, regex.",
        examples=["/api/quotes/"],
    )
    path: str | None = Field(
        None,
        description="Match this path exactly. Exactly one of prefix, path, regex.",
        examples=["/api/status"],
    )
    regex: str | None = Field(
        None,
        description="Match paths by a regular expression in RE2 syntax (no lookarounds or "
        "backreferences), anchored at the start; end it with `$` to pin the whole path. "
        "Exactly one of prefix, path, regex.",
        examples=["/api/signals/[A-Za-z]+$"],
    )
    methods: tuple[str, ...] | None = Field(
        None,
        description="Match only these methods; none: every method.",
        examples=[["GET", "HEAD"]],
    )
    hosts: tuple[Annotated[str, AfterValidator(parse_host_pattern)], ...] | None = Field(
        None,
        description="Match only requests for these host names (virtual hosts): exact "
        "(`api.example.com`) or `*.example.com` for any subdomain, any port, any case. Routes "
        "naming the request's host exactly are tried first, then those matching it by "
        "wildcard (longer domain first), then routes without hosts; in table order within "
        "each. None: any host.",
        examples=[["api.example.com", "*.api.example.com"]],
    )

    @field_validator("prefix", "path")
    @classmethod
    def _starts_with_slash(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return None if value is None else regex.check(value)

    @field_validator("methods")
    @classmethod
    def _methods_are_tokens(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        bad = [m for m in value if not _TOKEN.fullmatch(m)]
        if bad:
            raise ValueError(f"not HTTP method names: {bad}")
        if not value:
            raise ValueError("must list at least one method (omit it to match all)")
        return tuple(m.upper() for m in value)

    @field_validator("hosts")
    @classmethod
    def _hosts_not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return _some_hosts(value, "match any host")

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Match:
        given = [k for k in ("prefix", "path", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"needs exactly one of prefix, path, regex (got {', '.join(given) or 'none'})"
            )
        return self


class Route(Model):
    name: str | None = Field(
        None,
        description="Shown in logs and statistics; labels the route's metric series and "
        "rate-limit counters, so unique. None: `routes[i]`.",
        examples=["quotes"],
    )
    match: Match = Field(
        description="Which requests the route takes: exactly one of prefix, path or regex, "
        "against the path as the origin reads it (escapes normalised, dot segments removed) "
        "without the query; optionally methods and hosts. Required.",
        examples=[{"prefix": "/api/quotes/", "methods": ["GET", "HEAD"]}],
    )
    max_body_size: int | None = Field(
        None,
        ge=0,
        description="Bytes a request body may have on this route (see listen.max_body_size, "
        "which it replaces here); none: listen.max_body_size.",
        examples=["100MB"],
    )
    _body_size = field_validator("max_body_size", mode="before")(_optional_size)
    upstream: UpstreamTargets | None = Field(
        None,
        description="This route's own upstream: a URL, or a mapping of url or targets, "
        "balance and host (as in upstream); pool, timeouts, retries, breaker, ejection and "
        "health checks are upstream's. None: upstream's targets.",
        examples=[
            "http://127.0.0.1:9100",
            {
                "targets": ["http://10.0.0.3:9100", "http://10.0.0.4:9100"],
                "balance": "least_request",
            },
        ],
    )
    cache: CacheSettings | None = Field(
        None,
        description="Overrides the top-level cache section key by key; `false`: not cached.",
    )
    cors: CorsSettings | None = Field(
        None,
        description="Replaces the top-level cors section for this route; `false`: no CORS.",
    )
    compression: CompressionSettings | None = Field(
        None,
        description="Replaces the top-level compression section for this route; `false`: "
        "not compressed.",
    )
    rate_limit: RateLimitSettings | None = Field(
        None,
        description="Overrides the top-level rate_limit key by key, with counters of its own; "
        "`false`: not limited.",
    )
    upgrade: UpgradeSettings | None = Field(
        None,
        description="WebSocket requests (`Upgrade: websocket`) passed through to the upstream: "
        "its 101 is relayed and the two connections joined byte for byte, never cached; `true`: "
        "with the defaults. None or `false`: the Upgrade field is ignored (as RFC 9110 §7.8 "
        "allows) and the request is served as plain HTTP.",
    )

    @field_validator("cache")
    @classmethod
    def _no_global_keys(cls, value: CacheSettings | None) -> CacheSettings | None:
        if value is not None:
            if "max_memory" in value.model_fields_set:
                raise ValueError(
                    "max_memory is one budget for the whole process: set it in the top-level cache"
                )
            if "key_secret" in value.model_fields_set:
                raise ValueError(
                    "key_secret is one for the deployment: set it in the top-level cache"
                )
            if "warming" in value.model_fields_set:
                raise ValueError("warming is one for the process: set it in the top-level cache")
        return value

    @field_validator("upstream", mode="before")
    @classmethod
    def _url_form(cls, value: Any) -> Any:
        # Checked here, so that a problem is told at the key the file has.
        return {"url": check_upstream_url(value)} if isinstance(value, str) else value


class Settings(Model):
    # The published schema keeps the name editors already know.
    model_config = ConfigDict(title="Config")

    listen: Listen = Field(Listen(), description="The proxy listener clients connect to.")
    upstream: Upstream = Field(
        description="The origin requests are forwarded to, and how. Required."
    )
    admin: Admin = Field(
        Admin(),
        description="The admin listener: health, stats, purge, metrics and the dashboard.",
    )
    cache: CacheSettings | None = Field(
        None,
        description="Defaults for every route and for unmatched requests; `false` turns "
        "caching off. No cache section anywhere: nothing is cached.",
    )
    cors: CorsSettings | None = Field(
        None,
        description="The CORS allowlist for browsers; a route may replace it or say `false`.",
    )
    compression: CompressionSettings | None = Field(
        None,
        description="Compress responses in the smallest encoding each client accepts; a "
        "route may replace it or say `false`.",
    )
    routes: tuple[Route, ...] = Field(
        (),
        description="Routes, first match wins; unmatched requests are forwarded to "
        "upstream.url with the top-level sections.",
    )
    shutdown_grace: Duration = Field(
        10.0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds in-flight requests get, in all, once the proxy port stops "
        "accepting; then they get a 503 or are cut.",
        examples=[10, "30s"],
    )
    shutdown_delay: Duration = Field(
        5.0,
        ge=0,
        allow_inf_nan=False,
        description="Seconds between SIGTERM and the proxy port closing: /readyz responds 503 "
        "at once and the port serves on while load balancers take this instance out (a "
        "Kubernetes preStop sleep). SIGINT (Ctrl-C) skips it.",
        examples=[5, "15s"],
    )
    purge: Purge = Field(
        Purge(),
        description="`PURGE` requests on the proxy port, as Varnish and nginx's cache_purge "
        "take them: who may send them.",
    )
    trusted_proxies: tuple[Annotated[str, AfterValidator(_network)], ...] = Field(
        (),
        description="Proxies (CIDRs or addresses, IPv4 or IPv6) whose X-Forwarded-* and "
        "Forwarded headers are believed; from anyone else they are dropped. Empty: nobody "
        "is trusted.",
        examples=[["10.0.0.0/8", "fd00::/8", "127.0.0.1"]],
    )
    redis: RedisSettings | None = Field(
        None,
        description="The Redis shared by every process and instance (cache tier, purges, "
        "rate limits, revocations); none: everything stays in each process's memory.",
    )
    # proxy/server/supervisor.py runs them.
    workers: int = Field(
        1,
        ge=1,
        le=MAX_WORKERS,
        description="Processes serving the proxy port (SO_REUSEPORT), each with its own "
        f"memory tier; `auto`: one per CPU this process may run on (at most {MAX_WORKERS}). "
        "Above 1 a supervisor runs them and serves the admin port.",
        examples=[4, "auto"],
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: object) -> object:
        if value == "auto":
            return min(usable_cpus(), MAX_WORKERS)
        # A string is fine when it holds a number: `workers: ${WORKERS:-2}` is one.
        if isinstance(value, bool) or (isinstance(value, str) and not value.strip().isdigit()):
            raise ValueError(f"must be a number of processes or auto, got {value!r}")
        return value

    log: LogSettings = Field(
        LogSettings(), description="Log format and level, the access log, the stats line."
    )
    alerts: AlertSettings = Field(
        AlertSettings(),
        description="Thresholds for GET /alerts/active on the admin port; raised and cleared "
        "alerts are logged too.",
    )
    rate_limit: RateLimitSettings | None = Field(
        None,
        description="Per-client rate limits, before the cache: defaults for every route and "
        "unmatched requests; a route may override them key by key or say `false`.",
    )
    revocation: RevocationSettings = Field(
        RevocationSettings(),
        description="The revoked-token list (POST /tokens/revoke on the admin port), shared "
        "through Redis when a redis section is configured.",
    )
    request_id: RequestIdSettings = Field(
        RequestIdSettings(),
        description="Request ids: every request gets one, the client's when sane, else one "
        "the proxy makes; returned on every response, logged, in JSON error bodies and sent "
        "upstream. `false`: nothing is added and the field passes through as any other.",
    )
    tracing: TracingSettings | None = Field(
        None,
        description="OpenTelemetry tracing, exported over OTLP/HTTP; needs the otel extra "
        "(pip install 'cacheproxy[otel]'). Absent: no tracing at all.",
    )
    # Rules across sections (a route's rate limit against the top level's, the Redis tier
    # against the `redis` section) are the loader's, not a validator's: a model validator
    # would not run while any field failed, and they must be reported with the field errors.


# --- loading ---------------------------------------------------------------


@dataclass(frozen=True)
class _Located:
    path: str
    message: str


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class _Loader(yaml.SafeLoader):
    """SafeLoader whose bad scalars (`2001-13-45`, `!!int zz`) are located YAML errors.

    PyYAML lets the bare ValueError of int()/date() escape, with no position and the value
    in its text.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except ValueError:
            kind = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"not a valid {kind}", node.start_mark
            ) from None


def _yaml_message(exc: yaml.YAMLError) -> str:
    """What and where, without the excerpt of the document PyYAML adds: it may hold a secret."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc)  # a ReaderError: a byte position and a character, no excerpt

    def at(mark: yaml.Mark | None) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"

    message = f"{at(exc.problem_mark)}: {exc.problem or exc.context}"
    if exc.problem and exc.context:
        message += f" ({exc.context}, at {at(exc.context_mark)})"
    return message


def _positions(
    node: yaml.Node, path: str = "", found: dict[str, tuple[int, int]] | None = None
) -> dict[str, tuple[int, int]]:
    """(line, column) of every key and list item by its key path: problems are listed in the
    order of the file."""
    found = {} if found is None else found
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            where = _join(path, str(key_node.value))
            found.setdefault(where, (key_node.start_mark.line, key_node.start_mark.column))
            _positions(value_node, where, found)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found.setdefault(_join(path, i), (item.start_mark.line, item.start_mark.column))
            _positions(item, _join(path, i), found)
    return found


def _in_file_order(
    problems: list[_Located], positions: Mapping[str, tuple[int, int]]
) -> list[_Located]:
    """Sorted by where their key is in the file, or the nearest key above it that is (a missing
    key is where its section is); those with no place in the file (a missing top-level key,
    an environment override of a key the file does not have) come first."""

    def where(problem: _Located) -> tuple[int, int]:
        path = problem.path
        while path not in positions:
            cut = max(path.rfind("."), path.rfind("["))
            if cut <= 0:
                return (-1, -1)
            path = path[:cut]
        return positions[path]

    return sorted(problems, key=where)  # stable: problems at one key keep their order


def _duplicate_keys(node: yaml.Node, path: str = "") -> Iterator[_Located]:
    """Walk the composed YAML tree: PyYAML silently keeps the last duplicate."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                line = key_node.start_mark.line + 1
                yield _Located(_join(path, key), f"duplicate key (line {line})")
            seen.add(key)
            yield from _duplicate_keys(value_node, _join(path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, _join(path, i))


def _substitute(
    value: Any, path: str, env: Mapping[str, str], errors: list[_Located], from_env: dict[str, str]
) -> Any:
    """Replace ${VAR} and ${VAR:-default} in string values (never in keys).

    ``from_env`` gets the path of every value that used a reference: the environment may hold
    a secret whatever key it lands in, so errors about such a value never show it.
    """
    if isinstance(value, dict):
        return {k: _substitute(v, _join(path, k), env, errors, from_env) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, _join(path, i), env, errors, from_env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    names = [f"${{{m.group(1)}}}" for m in _ENV_REF.finditer(value)]
    if names:
        from_env[path] = ", ".join(names)

    def replace(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        errors.append(_Located(path, f"environment variable {name} is not set (no default)"))
        return ""

    # Strings stay strings: pydantic's lax mode turns "8080" into an int where one is due.
    return _ENV_REF.sub(replace, value)


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
}


def _leaves(value: Any, path: str, secret: bool) -> Iterator[tuple[str, str, bool]]:
    """Each scalar in an error's input: its path, its text, whether a secret key holds it."""
    if isinstance(value, dict):
        for key, item in value.items():
            is_secret = secret or bool(_SECRET_KEY.fullmatch(str(key)))
            yield from _leaves(item, _join(path, key), is_secret)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, _join(path, i), secret)
    elif value is not None:
        yield path, str(value), secret


def redact_urls(text: str) -> str:
    """`text` with the password of every URL in it masked: for logs and output."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def _hide(message: str, texts: list[str]) -> str:
    for text in texts:
        message = message.replace(repr(text), "***")  # how our validators quote a value
        if len(text) >= 4:  # put some other way (a library's message); shorter would hit words
            message = message.replace(text, "***")
    return redact_urls(message)


def _env_source(leaf: str, from_env: Mapping[str, str]) -> str | None:
    """The variable(s) a value at `leaf` came from: its own path's, or a section's above it."""
    while True:
        if leaf in from_env:
            return from_env[leaf]
        cut = max(leaf.rfind("."), leaf.rfind("["))
        if cut <= 0:
            return None
        leaf = leaf[:cut]


def _pydantic_problems(
    exc: ValidationError, from_env: Mapping[str, str] | None = None
) -> Iterator[_Located]:
    """Every problem with its key path: the one place config values are put into messages.

    A value from the environment or under a secret key is never shown, nor a URL's password.
    """
    from_env = from_env or {}
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path = _join(path, part)
        secret = any(_SECRET_KEY.fullmatch(str(part)) for part in err["loc"])
        hidden: list[str] = []
        why = ""
        for leaf, text, under_secret in _leaves(err.get("input"), path, secret):
            source = _env_source(leaf, from_env)
            if source is not None:
                hidden.append(text)
                why = why or f"it comes from {source}"
            elif under_secret:
                hidden.append(text)
                why = why or "its key holds a secret"
            hidden += [m.group(2) for m in _URL_PASSWORD.finditer(text)]
        message = _MESSAGES.get(err["type"], err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message += _did_you_mean(err["loc"])
        if err["type"] == "missing" and all(isinstance(part, str) for part in err["loc"]):
            where = env_overrides.required(tuple(map(str, err["loc"])), Settings)
            message += f" (in the file, or {env_overrides.variable(where)})"
        # Our own validators already quote the value; pydantic's built-in checks do not.
        if not why and err["type"] not in ("extra_forbidden", "missing", "value_error"):
            message += f" (got {err['input']!r})" if "input" in err else ""
        message = _hide(message, [text for text in hidden if text])
        if why:
            message += f" (value not shown: {why})"
        yield _Located(path or "(top level)", message)


def _did_you_mean(loc: tuple[str | int, ...]) -> str:
    """`; did you mean `timeouts`?` for an unknown key close to one its section takes."""
    section = keys.model_at(Settings, loc[:-1])
    hint = None if section is None else keys.closest(str(loc[-1]), keys.keys(section))
    return f"; did you mean `{hint}`?" if hint else ""


def parse_config(
    text: str, source: str = "config", env: Mapping[str, str] | None = None
) -> Settings:
    """Parse YAML text into Settings, or raise ConfigError listing every problem.

    `env` (the process's environment unless given) fills `${VAR}` references, and its
    `CACHEPROXY_*` variables override the file's keys (proxy/config/env.py)."""
    env = os.environ if env is None else env
    try:
        node = yaml.compose(text, Loader=_Loader)
        raw = None if node is None else _Loader(text).get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError([f"(yaml) {_yaml_message(exc)}".replace("\n", " ")], source) from None
    if node is None:
        raise ConfigError(["(top level): the file is empty; `upstream.url` is required"], source)

    problems = list(_duplicate_keys(node))
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping of keys"], source)
    from_env: dict[str, str] = {}
    unset: list[_Located] = []
    raw = _substitute(raw, "", env, unset, from_env)
    problems += _override(raw, env, unset, from_env, source)
    config: Settings | None = None
    try:
        config = Settings.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, from_env))
        salvaged = _salvage(raw, exc)
        if salvaged is not None:
            problems.extend(_across_sections(*salvaged))
    else:
        problems.extend(_across_sections(config))
    if problems or config is None:
        ordered = _in_file_order(problems, _positions(node))
        raise ConfigError([f"{p.path}: {p.message}" for p in ordered], source)
    return config


# Stand-ins for required keys that did not validate, so that what did can be checked.
_PLACEHOLDERS: dict[str, Any] = {
    "upstream": {"url": "http://placeholder.invalid"},
    "match": {"prefix": "/"},
}


def _salvage(raw: dict[str, Any], exc: ValidationError) -> tuple[Settings, frozenset[str]] | None:
    """What did validate of a config that did not, for the checks across sections.

    The top-level keys and route keys that failed are left out (a stand-in where the key is
    required) and returned as key paths, "unknown": a check that reads one of them says
    nothing, since a value that did not validate has no meaning to check against."""
    broken_top: set[str] = set()
    broken_routes: dict[int, set[str] | None] = {}  # None: the whole route
    for err in exc.errors():
        loc = err["loc"]
        if not loc:
            return None  # a rule on the whole file: nothing to salvage around
        if loc[0] == "routes" and len(loc) >= 2 and isinstance(loc[1], int):
            if len(loc) == 2:
                broken_routes[loc[1]] = None
            else:
                fields = broken_routes.setdefault(loc[1], set())
                if fields is not None:
                    fields.add(str(loc[2]))
        else:
            broken_top.add(str(loc[0]))
    unknown = set(broken_top)
    routes: list[Route] = []
    raw_routes = raw.get("routes") if "routes" not in broken_top else None
    for i, item in enumerate(raw_routes if isinstance(raw_routes, list) else []):
        broken = broken_routes.get(i, set())
        if broken is None or not isinstance(item, dict):
            broken = set(Route.model_fields)
        unknown.update(f"routes[{i}].{key}" for key in broken)
        kept = {k: v for k, v in item.items() if k not in broken} if isinstance(item, dict) else {}
        kept.setdefault("match", _PLACEHOLDERS["match"])
        try:
            routes.append(Route.model_validate(kept))
        except ValidationError:
            unknown.update(f"routes[{i}].{key}" for key in Route.model_fields)
            routes.append(Route.model_validate({"match": _PLACEHOLDERS["match"]}))
    top = {k: v for k, v in raw.items() if k not in broken_top and k != "routes"}
    top.setdefault("upstream", _PLACEHOLDERS["upstream"])
    try:
        config = Settings.model_validate(top)
    except ValidationError:
        return None
    return config.model_copy(update={"routes": tuple(routes)}), frozenset(unknown)


def _override(
    raw: dict[str, Any],
    env: Mapping[str, str],
    unset: list[_Located],
    from_env: dict[str, str],
    source: str,
) -> list[_Located]:
    """Apply the environment's overrides to the file's data, and warn of variables nobody
    reads. Returns the problems: `unset` references but those an override makes moot, and
    the overrides' own."""
    referenced = {m.group(1) for refs in from_env.values() for m in _ENV_REF.finditer(refs)}
    overrides = env_overrides.read(env, Settings)
    env_overrides.apply(raw, overrides)
    replaced = overrides.paths()
    # What the file said under an overridden key no longer counts.
    problems = [p for p in unset if _env_source(p.path, replaced) is None]
    for key in [k for k in from_env if _env_source(k, replaced) is not None]:
        del from_env[key]
    from_env.update(replaced)
    problems += [_Located(path, message) for path, message in overrides.problems]
    if overrides.applied:
        names = ", ".join(o.variable for o in overrides.applied)
        log.info("%s: environment overrides: %s", source, names)
    for name in overrides.unknown:
        if name not in referenced:
            hint = env_overrides.suggestion(name, Settings)
            log.warning(
                "%s: environment variable %s names no config key: ignored%s",
                source,
                name,
                f" (did you mean {hint}?)" if hint else "",
            )
    for name, instead in env_overrides.RENAMED.items():
        if name in env and name not in referenced:
            log.warning(
                "%s: environment variable %s is set but the config does not read it: "
                "ignored (%s sets that key whatever the file says)",
                source,
                name,
                instead,
            )
    return problems


def _across_sections(config: Settings, unknown: frozenset[str] = frozenset()) -> Iterator[_Located]:
    """Rules that tie one section to another. `unknown`: key paths that did not validate
    (see _salvage); a rule that would read one of them is not judged."""
    top = None if "cache" in unknown else config.cache
    redis_given = config.redis is not None or "redis" in unknown
    sections = [("cache", top)]
    sections += [(f"routes[{i}].cache", r.cache) for i, r in enumerate(config.routes)]
    for path, cache in sections:
        if cache is None or path in unknown:
            continue
        if not redis_given and "redis" in cache.tiers:
            yield _Located(f"{path}.tiers", "lists redis, but there is no `redis:` section")
        # What a route does not set, it inherits from the top-level section.
        if "tiers" in cache.model_fields_set or "cache" not in unknown:
            tiers = cache.tiers if top is None or "tiers" in cache.model_fields_set else top.tiers
            if cache.coalesce == "global" and "redis" not in tiers:
                yield _Located(f"{path}.coalesce", "global needs tiers: [memory, redis]")
    yield from _duplicate_route_names(config, unknown)
    if "listen" not in unknown and config.listen.hosts is not None:
        yield from _hosts_refused(config.listen.hosts, config.routes, unknown)
    routes_known = "routes" not in unknown
    matches_known = routes_known and not any(
        f"routes[{i}].{key}" in unknown
        for i in range(len(config.routes))
        for key in ("match", "cache")
    )
    if top is not None and top.warming is not None and matches_known:
        for i, url in enumerate(top.warming.urls):
            name = _caching_route(config, url.partition("?")[0])
            if name is not None:
                yield _Located(
                    f"cache.warming.urls[{i}]",
                    f"{url!r} is on route {name!r}, which does not cache: it cannot be warmed",
                )
    if "rate_limit" not in unknown:
        limits = [
            None if f"routes[{i}].rate_limit" in unknown else r.rate_limit
            for i, r in enumerate(config.routes)
        ]
        every_route_known = routes_known and not any(
            f"routes[{i}].rate_limit" in unknown for i in range(len(config.routes))
        )
        for path, message in route_problems(
            config.rate_limit, limits, every_route_known=every_route_known
        ):
            yield _Located(path, message)


def _duplicate_route_names(config: Settings, unknown: frozenset[str]) -> Iterator[_Located]:
    """A name is a route's metric label and rate-limit counters (proxy/pipeline/routes.py
    names an unnamed route `routes[i]`): two routes of one name would merge theirs."""
    first: dict[str, int] = {}
    for i, route in enumerate(config.routes):
        if f"routes[{i}].name" in unknown:
            continue
        name = route.name or f"routes[{i}]"
        if name in first:
            other = f"routes[{first[name]}]" + (".name" if config.routes[first[name]].name else "")
            yield _Located(
                f"routes[{i}].name",
                f"{name!r} is also the name of {other}: route names label metric series and "
                "rate-limit counters, so each must be unique",
            )
        else:
            first[name] = i


def _hosts_refused(
    served: tuple[str, ...], routes: tuple[Route, ...], unknown: frozenset[str]
) -> Iterator[_Located]:
    """A route host that listen.hosts refuses (421) could never be routed to: a typo in one
    of the two lists, found now rather than by the first client."""
    names = {p for p in served if not p.startswith("*.")}
    domains = tuple(p[1:] for p in served if p.startswith("*."))  # "*.a.com" -> ".a.com"
    for i, route in enumerate(routes):
        if f"routes[{i}].match" in unknown:
            continue
        for j, pattern in enumerate(route.match.hosts or ()):
            if pattern.startswith("*."):
                # Some name under it is served: a listed one, or a subdomain under a wildcard
                # that takes the same names or more (`*.a.com` under `*.com`) or fewer.
                domain = pattern[1:]
                ok = any(n.endswith(domain) for n in names) or any(
                    domain.endswith(d) or d.endswith(domain) for d in domains
                )
            else:
                ok = pattern in names or pattern.endswith(domains)
            if not ok:
                yield _Located(
                    f"routes[{i}].match.hosts[{j}]",
                    f"{pattern!r} is not in listen.hosts, so its requests get 421 and never "
                    "reach this route: add it there (or a wildcard that covers it)",
                )


def _caching_route(config: Settings, path: str) -> str | None:
    """None if a GET of `path` is cached, else the name of the route that does not cache it
    (first match wins, as in proxy/pipeline/routes.py, for a request naming no host: warming's
    requests name none, so routes that name hosts never take them)."""
    top_enabled = config.cache is not None and config.cache.enabled
    for i, route in enumerate(config.routes):
        m = route.match
        if (m.methods is not None and "GET" not in m.methods) or m.hosts is not None:
            continue
        if m.path is not None:
            matched = path == m.path
        elif m.prefix is not None:
            matched = path.startswith(m.prefix)
        else:
            assert m.regex is not None
            # As proxy/http/regex.py's prefix_matcher matches a request's path.
            text = path.encode("utf-8", "surrogateescape")
            matched = regex.compile_pattern(m.regex).match(text) is not None
        if matched:
            enabled = top_enabled if route.cache is None else route.cache.enabled
            return None if enabled else (route.name or f"routes[{i}]")
    return None if top_enabled else "default"


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Settings:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror}"], str(path)) from None
    return parse_config(text, str(path), env)


def with_overrides(
    config: Settings,
    *,
    port: int | None = None,
    upstream: str | None = None,
    admin_port: int | None = None,
) -> Settings:
    """Apply command-line overrides, validating them like the file's own values."""
    # Only what the file set: defaults re-validated as "set" would change meaning.
    data = config.model_dump(exclude_unset=True)
    if port is not None:
        data.setdefault("listen", {})["port"] = port
    if admin_port is not None:
        data.setdefault("admin", {})["port"] = admin_port
    if upstream is not None:  # one target: it replaces the file's list too
        data["upstream"]["url"] = upstream
        data["upstream"].pop("targets", None)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = [f"{p.path}: {p.message}" for p in _pydantic_problems(exc)]
        raise ConfigError(problems, "command line") from None
