"""Durations take units (`250ms`, `10s`, `1.5s`, `5m`, `1h`) as well as bare seconds, on every
duration key alike, and the code reads seconds whatever the file wrote (issue 21)."""

from __future__ import annotations

import re
import typing
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from proxy.config.durations import parse_duration
from proxy.config.keys import sections
from proxy.config.loader import ConfigError, Settings, parse_config
from proxy.config.schema import config_schema


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("10s", 10.0), ("1.5s", 1.5), ("5m", 300.0), ("1h", 3600.0),
     ("1d", 86400.0), (" 2 M ", 120.0), ("30", "30"), (7, 7), (0.5, 0.5)],
)  # fmt: skip
def test_the_spellings_of_a_duration(text: object, seconds: object) -> None:
    # A bare number (or a string holding one) is left to the field's own number check.
    assert parse_duration(text) == seconds


def test_duration_keys_take_units_and_the_code_reads_seconds() -> None:
    config = parse_config(
        """
upstream:
  url: http://a
  timeouts: {connect: 250ms, read: 1.5s, total: 1m}
  retries: {backoff: 100ms, max_backoff: 2s}
  pool: {queue_timeout: '${QUEUE:-3s}', keepalive_timeout: 5m}
listen: {timeouts: {request_head: 10s, keepalive: 0s}}
cache: {ttl: 5m, stale_if_error: 1h, warming: {popular: {half_life: 2m}}}
redis: {url: redis://r, timeout: 250ms}
log: {stats_interval: 30s}
alerts: {window: 2m}
cors: {allow_origins: ['https://a.example'], max_age: 10m}
revocation: {resync_interval: 1m}
shutdown_grace: 10
shutdown_delay: '${DELAY:-2}'
""",
        env={},
    )
    timeouts = config.upstream.timeouts
    assert (timeouts.connect, timeouts.read, timeouts.total) == (0.25, 1.5, 60.0)
    assert config.upstream.pool.queue_timeout == 3.0
    assert config.upstream.retries.backoff == 0.1
    assert config.listen.timeouts.keepalive == 0.0
    assert config.cache is not None and config.cache.ttl == 300.0
    assert config.redis is not None and config.redis.timeout == 0.25
    assert (config.shutdown_grace, config.shutdown_delay) == (10.0, 2.0)
    assert isinstance(config.shutdown_grace, float) and isinstance(timeouts.connect, float)
    # Whole seconds where the code counts them: an int, as before.
    assert config.alerts.window == 120 and isinstance(config.alerts.window, int)
    assert config.cors is not None and config.cors.max_age == 600


def test_a_bad_duration_says_what_is_accepted_and_bounds_still_hold() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            "upstream: {url: http://a, timeouts: {read: soon, connect: -1s}, "
            "retries: {backoff: 2m}}\nalerts: {window: 1.5s}\n",
            env={},
        )
    found = info.value.problems
    assert found[0] == (
        "upstream.timeouts.read: not a duration: 'soon' (use seconds, or a number with a "
        "unit: 250ms, 10s, 1.5s, 5m, 1h, 1d)"
    )
    assert found[1].startswith("upstream.timeouts.connect: not a duration: '-1s'")
    assert found[2].startswith("upstream.retries.backoff: Input should be less than or equal to 60")
    assert found[3].startswith("alerts.window: Input should be a valid integer")


# Names that say a key is a span of time: each must be a duration, with every spelling.
_TIME_NAME = re.compile(
    r".*(timeout|ttl|interval|delay|grace|window|backoff|reset_after|keepalive|half_life|"
    r"stale_|health_cache|max_age|request_head)$|connect|read|total|body"
)

# force_ttl is a switch; max_p99_ms a latency threshold its name says is in milliseconds.
_NOT_SPANS = {"force_ttl", "max_p99_ms"}


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        for inner in _annotations(field.annotation):
            for found in sections(inner):
                _models(found, seen)
    return seen


def _annotations(annotation: Any) -> list[Any]:
    """The annotation and every type inside it (`tuple[Route, ...] | None` -> ..., Route)."""
    found = [annotation]
    for arg in typing.get_args(annotation):
        found += _annotations(arg)
    return found


def _parses_durations(metadata: Any) -> bool:
    return any(getattr(m, "func", None) is parse_duration for m in metadata)


def _is_duration(field: FieldInfo) -> bool:
    """pydantic moves a field's own Annotated metadata to `field.metadata`; one inside a union
    (`Duration | None`) stays in the annotation."""
    return _parses_durations(field.metadata) or any(
        typing.get_origin(inner) is typing.Annotated and _parses_durations(inner.__metadata__)
        for inner in _annotations(field.annotation)
    )


def test_every_key_named_for_a_span_of_time_is_a_duration() -> None:
    checked = []
    for model in _models(Settings, set()):
        for name, field in model.model_fields.items():
            if _TIME_NAME.fullmatch(name) and name not in _NOT_SPANS:
                assert _is_duration(field), f"{model.__name__}.{name}"
                checked.append(name)
    assert len(checked) >= 25  # the walk reached the sections, not just the top level


def test_the_schema_takes_the_spellings_the_loader_takes() -> None:
    validator = jsonschema.Draft202012Validator(config_schema())
    base: dict[str, Any] = {"url": "http://a"}
    ok = {"upstream": {**base, "timeouts": {"connect": "250ms", "read": 3, "total": "1.5s"}}}
    assert list(validator.iter_errors(ok)) == []
    for bad in ({"connect": "soon"}, {"connect": 0}, {"total": -1}, {"total": "-1s"}):
        doc = {"upstream": {**base, "timeouts": bad}}
        assert list(validator.iter_errors(doc)), bad
    assert list(validator.iter_errors({"upstream": base, "alerts": {"window": "2m"}})) == []
