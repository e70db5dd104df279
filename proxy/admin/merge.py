"""One admin response out of several workers' responses: pure, no I/O.

With `workers: N` the supervisor asks every worker and merges what they say, so that admin
tools see one proxy. The rules know nothing of particular endpoints (those added later merge
too), only of JSON shapes:

- numbers add up (counters, sizes, budgets: the whole machine's);
- ratios and estimates do not: those of the observer's documents (`hit_rate`, `p99_ms`, ...)
  are recomputed from the summed counts beside them (proxy/observe/documents.py);
- a value under a key named `status` takes the worst (unhealthy/draining/down > degraded >
  healthy/up);
- booleans must all be true; lists are concatenated; objects merge key by key, recursively;
- anything else (strings, mixed types): the first worker's; a null never hides a value.

An endpoint whose numbers must not add up (a count read from Redis is the same on every
worker) says so with a response header, `Cacheproxy-Merge: count=max, started_at=min`: for
each key name, `sum`, `max`, `min` or `first`, wherever that key appears in the document
(`sum` on lists of numbers adds them up item by item, as a histogram's buckets).

Responses that are not JSON (an HTML page, metrics text) are passed on when every worker gave
the same bytes; different ones cannot be merged without knowing their format, so the response
is a 502 saying so (`GET /workers` lists each worker's admin socket for asking one directly).

A worker that did not respond is never silent: JSON objects get `unanswered` (which worker,
why) and a `status` of at least `degraded`; a request that changes something (any method but
GET and HEAD) did not reach every worker, so it gets 503, like an incomplete purge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.observe.documents import recompute_ratios

MERGE_HEADER = "Cacheproxy-Merge"
_MERGE_HEADER_LOWER = MERGE_HEADER.lower()
RULES = frozenset({"sum", "max", "min", "first"})
# Unknown words rank with degraded: not known to be fine, not known to be down.
_SEVERITY = {
    **{"healthy": 0, "up": 0, "ok": 0, "ready": 0, "alive": 0, "degraded": 1},
    **{"unhealthy": 2, "down": 2, "draining": 2},
}
_SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class WorkerResponse:
    """What one worker said; `headers` holds only those worth passing on."""

    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MissingResponse:
    """A worker that gave no response, and why: listed under `unanswered`."""

    worker: int
    pid: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Merged:
    status: int
    content_type: str
    body: bytes
    headers: list[tuple[str, str]]  # pairs: a field may repeat


def parse_rules(value: str) -> dict[str, str]:
    """`count=max, started_at=min` -> {"count": "max", ...}; malformed items are ignored."""
    rules: dict[str, str] = {}
    for item in value.split(","):
        key, _, rule = item.partition("=")
        key, rule = key.strip(), rule.strip().lower()
        if key and rule in RULES:
            rules[key] = rule
    return rules


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers(value: object) -> bool:
    return isinstance(value, list) and all(_is_number(x) for x in value)


def merge_json(values: Sequence[Any], rules: Mapping[str, str], key: str | None = None) -> Any:
    """The values one key holds in each worker's document, merged (module docstring)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    rule = rules.get(key) if key is not None else None
    if rule is not None and all(_is_number(v) for v in present):
        if rule == "max":
            return max(present)
        if rule == "min":
            return min(present)
    if rule == "first":
        return present[0]
    if rule == "sum" and all(_numbers(v) for v in present):
        return [sum(column) for column in zip(*present, strict=False)]
    if key == "status" and all(isinstance(v, str) for v in present):
        return max(present, key=lambda v: _SEVERITY.get(v.lower(), 1))  # the first of the worst
    if all(isinstance(v, bool) for v in present):
        return all(present)
    if all(_is_number(v) for v in present):
        return sum(present)
    if all(isinstance(v, dict) for v in present):
        keys = dict.fromkeys(k for v in present for k in v)  # first-seen order
        return {k: merge_json([v.get(k) for v in present], rules, k) for k in keys}
    if all(isinstance(v, list) for v in present):
        return [item for v in present for item in v]
    return present[0]


def _json(response: WorkerResponse) -> tuple[bool, Any]:
    media = response.content_type.split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        return False, None
    try:
        return True, orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return False, None


def _error(status: int, code: str, message: str, unanswered: list[dict[str, Any]]) -> Merged:
    body: dict[str, Any] = {"error": code, "message": message}
    if unanswered:
        body["status"] = "unhealthy"
        body["unanswered"] = unanswered
    return Merged(status, "application/json", orjson.dumps(body), [])


def merge_responses(
    method: str, responses: Sequence[WorkerResponse], missing: Sequence[MissingResponse]
) -> Merged:
    """One response for the client out of the workers' responses (in worker order)."""
    unanswered = [{"worker": m.worker, "pid": m.pid, "error": m.reason} for m in missing]
    if not responses:
        return _error(503, "no_workers", "no worker answered", unanswered)
    status = max(r.status for r in responses)  # the worst: 5xx, then 4xx
    # Headers such as WWW-Authenticate or Retry-After go with the status they explain.
    explained = next(r.headers for r in responses if r.status == status)
    headers = [(k, v) for k, v in explained.items() if k.lower() != _MERGE_HEADER_LOWER]
    parsed = [_json(r) for r in responses]
    if not all(ok for ok, _ in parsed):
        first = responses[0]
        if any(
            (r.status, r.content_type, r.body) != (first.status, first.content_type, first.body)
            for r in responses
        ):
            return _error(
                502,
                "not_mergeable",
                f"the workers gave different {first.content_type or 'untyped'} answers, which "
                "only JSON ones can be merged: GET /workers lists each worker's admin socket",
                unanswered,
            )
        return Merged(status, first.content_type, first.body, headers)
    rules = parse_rules(
        next((v for k, v in responses[0].headers.items() if k.lower() == _MERGE_HEADER_LOWER), "")
    )
    document = merge_json([value for _, value in parsed], rules)
    if isinstance(document, dict):
        recompute_ratios(document)
    if missing:
        if isinstance(document, dict):
            if isinstance(document.get("status"), str):
                document["status"] = merge_json([document["status"], "degraded"], {}, "status")
            document["unanswered"] = unanswered
            if method not in _SAFE_METHODS:
                document.setdefault("error", "incomplete")
                document.setdefault("message", "not every worker answered: see unanswered")
        if method not in _SAFE_METHODS:
            status = max(status, 503)
    return Merged(status, "application/json", orjson.dumps(document), headers)
