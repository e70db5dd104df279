"""A route's cache behaviour, resolved once at start-up from the `cache:` sections (top level and
the route's own, proxy/config/cache.py): the rules, the key builder, the limits."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from multidict import istr
from pydantic import BaseModel

from proxy.cache.keys import KeyBuilder, KeyRules
from proxy.cache.policy import CREDENTIAL_HEADERS, SURROGATE_FIELDS, CacheRules
from proxy.cache.tags import TagFields
from proxy.config.cache import CacheSettings


@dataclass(frozen=True, slots=True)
class RouteCache:
    """A route's cache behaviour, resolved once at start-up."""

    rules: CacheRules
    keys: KeyBuilder
    tags: TagFields  # the response fields that tag an entry (tags.py)
    max_entry_size: int
    shared: bool = False  # entries also go to (and come from) the Redis tier
    coalesce_global: bool = False  # one fetch per key across instances (needs `shared`)
    underscores: bool = False  # `underscores_in_headers`: forwarded on fetches by the cache
    range_parts: bool = True  # `range_requests: parts`: 206s stored as parts (cache/parts.py)
    # Response fields (lower case) meant for this cache, never sent to a client: the tags
    # fields and Surrogate-Control, unless `keep_surrogate_headers`.
    hidden: frozenset[str] = frozenset()


def resolve(
    top: CacheSettings | None,
    route: CacheSettings | None,
    known_credentials: Iterable[str] = (),
    key_secret: bytes = b"",
) -> RouteCache | None:
    """Route keys override top-level ones key by key; no section anywhere: no caching.

    `known_credentials` (see proxy/config/cache.py's `user_headers`) count as credentials on
    this route too; `key_secret` keys the hashes of credentials in cache keys.
    """
    if top is None and route is None:
        return None
    merged: dict[str, Any] = {}
    for layer in (top, route):
        if layer is not None:
            merged.update({name: getattr(layer, name) for name in layer.model_fields_set})
    if route is not None and "enabled" not in route.model_fields_set:
        merged["enabled"] = True  # a route's own cache section enables it
    settings = CacheSettings.model_validate(
        {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in merged.items()}
    )
    if not settings.enabled:
        return None
    per_user = settings.per_user.header if settings.per_user else None
    tags = TagFields.named(settings.tags_header)
    return RouteCache(
        rules=CacheRules(
            ttl=settings.ttl,
            force_ttl=settings.force_ttl,
            stale_while_revalidate=settings.stale_while_revalidate,
            stale_if_error=settings.stale_if_error,
            store_set_cookie=settings.store_set_cookie,
            user_header=per_user,
            on_credentials=settings.on_credentials,
            credentials=_unique(
                (*CREDENTIAL_HEADERS, *known_credentials, *settings.credential_headers)
            ),
        ),
        keys=KeyBuilder(
            KeyRules(
                query_ignore=settings.key.query.ignore,
                query_sort=settings.key.query.sort,
                headers=settings.key.headers,
                per_user_header=per_user,
                secret=key_secret,
            )
        ),
        tags=tags,
        max_entry_size=settings.max_entry_size,
        shared="redis" in settings.tiers,
        coalesce_global=settings.coalesce == "global",
        underscores=settings.underscores_in_headers,
        range_parts=settings.range_requests == "parts",
        hidden=frozenset() if settings.keep_surrogate_headers else tags.names | SURROGATE_FIELDS,
    )


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    """Header names without repeats, compared case-insensitively, first spelling kept."""
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)
    # Case-folded once (istr): every lookup asks for them, and multidict folds a str each time.
    return tuple(istr(name) for name in seen.values())
