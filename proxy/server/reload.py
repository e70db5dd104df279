"""Live config reload: what a new file may change in a running process, and what needs a restart.

Live (new requests see it; requests in flight finish under the route they started with):
`routes`, the top-level `cache` defaults (but `max_memory`), `cors`, `compression`,
`trusted_proxies`, `listen.hosts`, `listen.public_host`, and `listen.tls`'s files and versions
(its certificate is re-read on every reload). Everything else is built into
sockets, pools or processes at start-up; a change there is reported as "restart required"
and the running value is kept, so a later reload compares against what really runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from proxy.config.cache import CacheSettings
from proxy.config.loader import Settings, load_config, with_overrides

# Dotted paths whose value is fixed for the life of a process.
RESTART_REQUIRED: tuple[str, ...] = (
    "listen.host",
    "listen.port",  # the bound socket
    "listen.timeouts",
    "listen.max_connections",  # the listener
    "listen.max_connections_per_client",
    "listen.server_header",  # in every stored entry's prepared head
    "admin",  # its socket and token guard
    "workers",  # the processes
    "upstream",  # the pool, its timeouts and retries, the health probe
    "redis",  # the connection pool and purge subscription
    "cache.max_memory",  # the memory tier's budget
    "shutdown_grace",
    "shutdown_delay",
    "log",  # handlers and the access log writer
    "alerts",  # the rolling window
    "tracing",  # the tracer provider and its exporter
)
# Dotted paths that may change live, but not come or go: the listener speaks TLS or not.
RESTART_TO_ADD_OR_REMOVE: tuple[str, ...] = ("listen.tls",)


@dataclass(frozen=True)
class ConfigSource:
    """Where the config came from, with the command line's overrides: what a reload re-reads.

    Picklable: a worker gets it with its Settings.
    """

    path: str
    port: int | None = None
    upstream: str | None = None
    admin_port: int | None = None

    def load(self) -> Settings:
        """Raises ConfigError with every problem."""
        config = load_config(self.path)
        return with_overrides(
            config, port=self.port, upstream=self.upstream, admin_port=self.admin_port
        )


_MISSING = object()


def _get(config: Settings, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        if value is None and part == "max_memory":
            value = CacheSettings()  # no cache section: the default budget
        value = getattr(value, part, _MISSING)
    return value


def restart_required(running: Settings, new: Settings) -> list[str]:
    """The keys whose new value only a restart would apply."""
    fixed = [path for path in RESTART_REQUIRED if _get(running, path) != _get(new, path)]
    return fixed + [
        path
        for path in RESTART_TO_ADD_OR_REMOVE
        if (_get(running, path) is None) != (_get(new, path) is None)
    ]


def _with(model: BaseModel, path: list[str], value: Any) -> BaseModel:
    head, *rest = path
    if rest:
        inner = getattr(model, head)
        if inner is None:
            return model  # nothing there to hold the old value: a restart settles it
        value = _with(inner, rest, value)
    return model.model_copy(update={head: value})


def effective(running: Settings, new: Settings) -> Settings:
    """`new` with the running value of every key that needs a restart: what now runs."""
    result: BaseModel = new
    for path in restart_required(running, new):
        old = _get(running, path)
        if old is not _MISSING:
            result = _with(result, path.split("."), old)
    assert isinstance(result, Settings)
    return result


def applied(restart: list[str]) -> dict[str, object]:
    """The admin response to a reload that was applied."""
    return {"reloaded": True, "restart_required": restart, "errors": []}


def refusal(problems: list[str]) -> dict[str, object]:
    return {"reloaded": False, "restart_required": [], "errors": problems}
