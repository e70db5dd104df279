"""The purge log's entries and wake-ups, soft purges among them: pure. (Its followers on a
real Redis: tests/e2e/test_purge_log.py.)"""

from __future__ import annotations

import orjson

from proxy.shared.purge_log import Outbox, Purge, fields, message, parse


def as_read(raw: dict[str, bytes]) -> dict[bytes, bytes]:
    """A log entry's fields as redis-py reads them back."""
    return {name.encode(): value for name, value in raw.items()}


def test_a_soft_purge_goes_through_the_log_as_one() -> None:
    soft = Purge("tag", "user-42", soft=True)
    assert parse(as_read(fields(soft, "i1"))) == ("i1", soft)
    hard = Purge("url", "h/a?")
    assert parse(as_read(fields(hard, "i1"))) == ("i1", hard)
    assert orjson.loads(message(soft, "i1", "5-0") or b"") == {
        "from": "i1",
        "kind": "tag",
        "value": "user-42",
        "soft": True,
        "id": "5-0",
    }
    assert "soft" not in orjson.loads(message(hard, "i1", None) or b"")


def test_instances_mid_upgrade_read_each_others_entries() -> None:
    # An entry written by a version that knows no soft purges is a hard purge here...
    old = {b"from": b"i0", b"kind": b"prefix", b"value": b"/api/"}
    assert parse(old) == ("i0", Purge("prefix", "/api/"))
    # ...and a soft one keeps the fields such a version reads, under the kind it knows: it
    # removes what it would have marked, never skips it.
    written = fields(Purge("prefix", "/api/", soft=True), "i1")
    assert {k: written[k] for k in ("from", "kind", "value")} == {
        "from": b"i1",
        "kind": b"prefix",
        "value": b"/api/",
    }


def test_a_soft_and_a_hard_purge_of_one_thing_both_wait_in_the_outbox() -> None:
    box = Outbox(limit=10)
    box.add(Purge("url", "h/a?", soft=True))
    box.add(Purge("url", "h/a?"))
    box.add(Purge("url", "h/a?", soft=True))
    assert len(box) == 2 and box.first() == Purge("url", "h/a?", soft=True)
