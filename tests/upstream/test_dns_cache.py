"""How long upstream addresses are kept, and what a connection does with them (pure)."""

from __future__ import annotations

import math

from proxy.upstream.dns_cache import Answer, Use, answered, failed, keep_for, literal, use


def test_a_records_ttl_is_kept_within_the_floor_and_ceiling() -> None:
    assert keep_for(30, min_ttl=5, max_ttl=60) == 30
    assert keep_for(0, min_ttl=5, max_ttl=60) == 5  # TTL 0 would ask for every connection
    assert keep_for(86400, min_ttl=5, max_ttl=60) == 60  # a day-long TTL is seen within 60 s
    assert keep_for(None, min_ttl=5, max_ttl=60) == 60  # unknown (getaddrinfo): the ceiling


def test_an_answer_is_fresh_for_its_ttl_then_stale_while_it_is_asked_again() -> None:
    answer = answered(("10.0.0.1",), ttl=30, now=100, min_ttl=5, max_ttl=60)
    assert answer == Answer(("10.0.0.1",), 130)
    assert use(answer, 129.9) is Use.FRESH
    assert use(answer, 130) is Use.STALE  # used once more, looked up in the background


def test_nothing_known_means_waiting_for_a_lookup() -> None:
    assert use(None, 0) is Use.WAIT


def test_a_failed_lookup_keeps_the_last_addresses_and_asks_again_later() -> None:
    before = answered(("10.0.0.1",), ttl=30, now=100, min_ttl=5, max_ttl=60)
    after = failed(before, "timeout", now=130, negative_ttl=5)
    assert after == Answer(("10.0.0.1",), 135, "timeout")
    assert use(after, 134) is Use.FRESH  # the name servers are left alone meanwhile
    assert use(after, 135) is Use.STALE


def test_a_name_that_never_resolved_fails_fast_then_is_asked_again() -> None:
    nothing: Answer[str] = failed(None, "Domain name not found", now=10, negative_ttl=5)
    assert nothing == Answer((), 15, "Domain name not found")
    assert use(nothing, 14.9) is Use.FAILED  # no connection sent to the name servers
    assert use(nothing, 15) is Use.WAIT


def test_an_ip_address_is_never_looked_up_again() -> None:
    answer = literal(("127.0.0.1",))
    assert answer.expires == math.inf and use(answer, 1e12) is Use.FRESH
