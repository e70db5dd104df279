"""The shared-store byte format: exact round trips, and anything else is a miss, never a crash."""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache.entry import Entry
from proxy.cache.entry_format import MAGIC, VERSION, EntryFormatError, decode, encode
from proxy.cache.policy import CacheRules

NOW = 1_700_000_000.0

# What aiohttp hands us for header bytes that are not UTF-8.
raw_text = st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape"))


def make_entry(
    headers: list[tuple[str, str]] | None = None, body: bytes = b'{"price": 1}'
) -> Entry:
    return Entry.build(
        status=200,
        reason="OK",
        headers=CIMultiDict(
            headers
            or [
                ("Content-Type", "application/json"),
                ("Cache-Control", "max-age=60"),
                ("Vary", "Accept-Language"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("Surrogate-Key", "quotes q-AAPL"),
            ]
        ),
        body=body,
        request_headers=CIMultiDict({"Accept-Language": "de"}),
        request_time=NOW - 1,
        response_time=NOW,
        rules=CacheRules(ttl=30),
        primary="api|h:x=1",
        url_key="api/quotes/AAPL?",
        path="/quotes/AAPL",
        tags_header="Surrogate-Key",
    )


def same(a: Entry, b: Entry) -> None:
    for name in Entry.__slots__:  # type: ignore[attr-defined]
        left, right = getattr(a, name), getattr(b, name)
        if name == "headers":
            assert list(left.items()) == list(right.items())
        elif name == "variants":
            assert {k: (list(h.items()), body) for k, (h, body) in left.items()} == {
                k: (list(h.items()), body) for k, (h, body) in right.items()
            }
        else:
            assert left == right, name


def test_round_trip_keeps_every_field_and_header_order() -> None:
    entry = make_entry()
    same(decode(encode(entry)), entry)


def test_a_decoded_entry_holds_equal_keys_as_one_string() -> None:
    entry = dataclasses.replace(make_entry(), primary="api/quotes/AAPL?")  # no key headers
    back = decode(encode(entry))
    assert back.primary == back.url_key and back.primary is back.url_key


def test_only_the_chosen_variants_travel_and_are_counted() -> None:
    entry = make_entry(body=b"x" * 5000)
    br = CIMultiDictProxy(CIMultiDict({"Content-Encoding": "br", "Vary": "Accept-Encoding"}))
    entry.variants = {"br": (br, b"compressed"), "identity": (br, b"y" * 5000)}
    back = decode(encode(entry, variants=["br", "zstd"]))
    assert list(back.variants) == ["br"]
    assert back.variants["br"][1] == b"compressed"
    assert back.size > entry.size  # the variant is counted against the memory budget


@given(
    headers=st.lists(st.tuples(raw_text.filter(bool), raw_text), max_size=12),
    body=st.binary(max_size=2000),
)
def test_round_trip_of_any_header_bytes(headers: list[tuple[str, str]], body: bytes) -> None:
    entry = make_entry([("Cache-Control", "max-age=60"), *headers], body)
    back = decode(encode(entry))
    assert list(back.headers.items()) == list(entry.headers.items())
    assert back.body == body


def test_every_truncation_is_refused() -> None:
    data = encode(make_entry())
    for end in range(len(data)):
        with pytest.raises(EntryFormatError):
            decode(data[:end])


def test_every_changed_byte_is_refused() -> None:
    data = encode(make_entry())
    for i in range(len(data)):
        corrupt = bytearray(data)
        corrupt[i] ^= 0x20
        with pytest.raises(EntryFormatError):
            decode(bytes(corrupt))


def test_another_version_is_refused_by_name() -> None:
    data = bytearray(encode(make_entry()))
    data[len(MAGIC)] = VERSION + 1
    with pytest.raises(EntryFormatError, match="version"):
        decode(bytes(data))


@pytest.mark.parametrize(
    "foreign",
    [
        b"",
        b"\x89CP",
        pickle.dumps({"status": 200, "body": b"x"}),
        b'{"status": 200, "headers": [], "body": ""}',
        b"HTTP/1.1 200 OK\r\n\r\n",
    ],
)
def test_foreign_values_are_refused(foreign: bytes) -> None:
    with pytest.raises(EntryFormatError):
        decode(foreign)


@given(st.binary(max_size=300))
def test_any_payload_with_a_valid_header_is_an_entry_or_refused(payload: bytes) -> None:
    # Even bytes that pass the checksum never escape as another exception.
    data = struct.pack("!4sBI", MAGIC, VERSION, zlib.crc32(payload)) + payload
    with contextlib.suppress(EntryFormatError):
        decode(data)


def test_decoding_never_unpickles() -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (pytest.fail, ("a stored value was unpickled",))

    with pytest.raises(EntryFormatError):
        decode(pickle.dumps(Boom()))
