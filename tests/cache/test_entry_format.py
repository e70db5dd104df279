"""The shared-store byte format: exact round trips, and anything else is a miss, never a crash."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import pickle
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.cache.entry import Entry, EntryExtras
from proxy.cache.entry_format import (
    _FIXED2,
    MAGIC,
    READS,
    VERSION,
    EntryFormatError,
    Unauthenticated,
    auth_key,
    decode,
    encode,
)
from proxy.cache.parts import Parts
from proxy.cache.policy import CacheRules
from proxy.cache.tags import TagFields
from proxy.http.headers import HOP_BY_HOP
from tests.cache.entry_v1 import encode_v1

NOW = 1_700_000_000.0

# What aiohttp hands us for header bytes that are not UTF-8 (never a line break: the
# parser ends a field there).
raw_text = (
    st.binary(max_size=40)
    .map(lambda b: b.decode("utf-8", "surrogateescape"))
    .filter(lambda t: "\r" not in t and "\n" not in t)
)
# Field names as the parser hands them on (tokens), and stored (no hop-by-hop field: they
# were dropped when the response was forwarded, and are dropped again when read back).
field_name = st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}", fullmatch=True).filter(
    lambda name: name.lower() not in HOP_BY_HOP | {"content-length", "connection"}
)


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
        tag_fields=TagFields.named(["Surrogate-Key"]),
    )


def same(a: Entry, b: Entry) -> None:
    for name in Entry.__slots__:
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


def test_parts_are_never_encoded_for_a_shared_store() -> None:
    entry = make_entry()
    assert entry.extras is not None
    parts = Parts(10).add(0, b"01234")
    partial = dataclasses.replace(entry, extras=dataclasses.replace(entry.extras, parts=parts))
    with pytest.raises(ValueError, match="parts"):
        encode(partial)


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
    headers=st.lists(st.tuples(field_name, raw_text), max_size=12),
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
    data[len(MAGIC)] = max(READS) + 1
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


# --- version 2, and version 1 values left by older instances -------------------------

# What the release before version 2 wrote for make_entry's URL with a br variant (its
# encode, run once): Vary, tags, two Set-Cookie lines, a header value that is not UTF-8.
V1_VALUE = base64.b64decode(
    """
iUNQRQHETPdfAMhB2VT8P8AAAEHZVPxAAAAAP/AAAAAAAABATgAAAAAAAAAAAAJPSwAAAAlhcGl8aDp4PTEAAAAQ
YXBpL3F1b3Rlcy9BQVBMPwAAAAwvcXVvdGVzL0FBUEwAAAAQAAAADENvbnRlbnQtVHlwZQAAABBhcHBsaWNhdGlv
bi9qc29uAAAADUNhY2hlLUNvbnRyb2wAAAAdbWF4LWFnZT02MCwgc3RhbGUtaWYtZXJyb3I9MzAAAAAERVRhZwAA
AAQidjEiAAAABFZhcnkAAAAPQWNjZXB0LUxhbmd1YWdlAAAAClNldC1Db29raWUAAAADYT0xAAAAClNldC1Db29r
aWUAAAADYj0yAAAABVgtUmF3AAAABGNhZukAAAANU3Vycm9nYXRlLUtleQAAAA1xdW90ZXMgcS1BQVBMAAAAAQAA
AA9hY2NlcHQtbGFuZ3VhZ2UAAAABAAAAAmRlAAAAAgAAAAZxdW90ZXMAAAAGcS1BQVBMAAAADHsicHJpY2UiOiAx
fQAAAAEAAAACYnIAAAAGAAAADENvbnRlbnQtVHlwZQAAABBhcHBsaWNhdGlvbi9qc29uAAAAEENvbnRlbnQtRW5j
b2RpbmcAAAACYnIAAAAEVmFyeQAAAA9BY2NlcHQtRW5jb2RpbmcAAAANiwWAY29tcHJlc3NlZA==
"""
)


def test_version_2_is_written_and_carries_the_packed_head_as_it_is() -> None:
    entry = make_entry()
    data = encode(entry)
    assert VERSION == 2 and data[len(MAGIC)] == 2
    assert entry.head.encode() in data  # one string, not a list of fields
    back = decode(data)
    assert back.head == entry.head and back.extras == entry.extras


def test_a_version_1_value_from_an_older_instance_is_read() -> None:
    back = decode(V1_VALUE)
    assert (back.status, back.reason, back.body) == (200, "OK", b'{"price": 1}')
    assert list(back.headers.items()) == [
        ("Content-Type", "application/json"),
        ("Cache-Control", "max-age=60, stale-if-error=30"),
        ("ETag", '"v1"'),
        ("Vary", "Accept-Language"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("X-Raw", b"caf\xe9".decode("utf-8", "surrogateescape")),
        ("Surrogate-Key", "quotes q-AAPL"),
    ]
    assert (back.response_time, back.initial_age, back.lifetime) == (NOW, 1.0, 60.0)
    assert back.cc.max_age == 60 and back.cc.stale_if_error == 30
    assert (back.primary, back.url_key, back.path) == (
        "api|h:x=1",
        "api/quotes/AAPL?",
        "/quotes/AAPL",
    )
    assert (back.vary, back.vary_values, back.tags) == (
        ("accept-language",),
        ("de",),
        ("quotes", "q-AAPL"),
    )
    headers, body = back.variants["br"]
    assert headers["Content-Encoding"] == "br" and body == b"\x8b\x05\x80compressed"
    # The test's version 1 writer is the one that release shipped...
    assert encode_v1(back, ["br"], request_time=NOW - 1) == V1_VALUE
    # ...and what it read back is what version 2 carries on.
    same(decode(encode(back, ["br"])), back)


@given(
    headers=st.lists(st.tuples(field_name, raw_text), max_size=12),
    body=st.binary(max_size=2000),
)
def test_version_1_round_trips_as_before(headers: list[tuple[str, str]], body: bytes) -> None:
    entry = make_entry([("Cache-Control", "max-age=60"), *headers], body)
    back = decode(encode_v1(entry))
    assert list(back.headers.items()) == list(entry.headers.items())
    assert (back.body, back.cc, back.extras) == (body, entry.cc, entry.extras)


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_every_truncation_and_changed_byte_of_either_version_is_refused(version: str) -> None:
    key = auth_key(b"k" * 32)
    data = {
        "v1": V1_VALUE,
        "v2": encode(make_entry()),
        "v3": encode(make_entry(), auth=key),
    }[version]
    for end in range(len(data)):
        with pytest.raises(EntryFormatError):
            decode(data[:end])
    for i in range(len(data)):
        corrupt = bytearray(data)
        corrupt[i] ^= 0x01
        with pytest.raises(EntryFormatError):
            decode(bytes(corrupt))
        if version == "v3" and i >= 9:  # the tag too, where a checksum can be made to match
            with pytest.raises(Unauthenticated):
                decode(_resealed(bytes(corrupt)[9:], 3), auth=key)


def test_with_a_secret_only_entries_tagged_under_it_are_read() -> None:
    ours, theirs = auth_key(b"s" * 32), auth_key(b"t" * 32)
    entry = make_entry()
    same(decode(encode(entry, auth=ours), auth=ours), entry)
    with pytest.raises(Unauthenticated):
        decode(encode(entry, auth=theirs), auth=ours)
    with pytest.raises(Unauthenticated):
        decode(encode(entry), auth=ours)  # a checksum alone is anyone's to make
    with pytest.raises(Unauthenticated):
        decode(encode_v1(entry), auth=ours)
    # Without a secret an instance trusts Redis as it is, and reads a tagged entry too.
    same(decode(encode(entry, auth=ours)), entry)


def test_framing_and_hop_by_hop_fields_written_into_redis_are_dropped_on_read() -> None:
    fields = [
        ("Content-Type", "text/plain"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close, X-Secret"),
        ("Keep-Alive", "timeout=5"),
        ("X-Secret", "named by Connection"),
        ("Content-Length", "999"),
        ("Upgrade", "h2c"),
        ("Cache-Control", "max-age=60"),
    ]
    forged = make_entry(fields, body=b"ok")
    variant = CIMultiDictProxy(CIMultiDict([("Content-Encoding", "br"), ("TE", "trailers")]))
    forged.variants = {"br": (variant, b"xx")}
    for data in (encode(forged, ["br"]), encode_v1(forged, ["br"])):
        back = decode(data)
        assert list(back.headers.items()) == [
            ("Content-Type", "text/plain"),
            ("Cache-Control", "max-age=60"),
        ]
        assert list(back.variants["br"][0].items()) == [("Content-Encoding", "br")]
    # A Content-Length that is the body's is the origin's own: kept.
    honest = make_entry([("Content-Length", "2"), ("Cache-Control", "max-age=60")], b"ok")
    assert decode(encode(honest)).head == honest.head


@pytest.mark.parametrize("padding", [0, 5000])  # a head remembered, and one too long to be
def test_a_head_read_again_is_checked_as_the_first_time(padding: int) -> None:
    pad = [("X-Pad", "p" * padding)] if padding else []
    fields = [("Content-Length", "999"), ("Connection", "X-A"), ("X-A", "1"), *pad]
    framed = make_entry([*fields, ("Cache-Control", "max-age=60")], body=b"ok")
    clean = make_entry([*pad, ("Cache-Control", "max-age=60")], body=b"ok")
    for _ in range(3):
        back = decode(encode(framed))
        assert back.head == clean.head and back.cc.max_age == 60
    # The same head with a body of another length: its Content-Length is that body's now.
    honest = make_entry([("Content-Length", "2"), *pad, ("Cache-Control", "max-age=60")], b"ok")
    longer = dataclasses.replace(honest, body=b"ok!")
    for _ in range(2):
        assert decode(encode(honest)).head == honest.head
        assert "Content-Length" not in decode(encode(longer)).headers
    bad = make_entry([*pad, ("Bad Name", "v")])
    for _ in range(2):
        with pytest.raises(EntryFormatError, match="not a"):
            decode(encode(bad))


def test_directives_of_a_field_that_connection_names_go_with_the_field() -> None:
    # Dropped as hop-by-hop, a Cache-Control gives no freshness either.
    entry = make_entry([("Connection", "Cache-Control"), ("Cache-Control", "max-age=60")])
    back = decode(encode(entry))
    assert "Cache-Control" not in back.headers
    assert back.cc == decode(encode(make_entry([("X-A", "1")]))).cc


@pytest.mark.parametrize("name", ["Bad Name", "X-A\x00", "Nämé", ""])
def test_a_stored_field_name_that_is_not_a_token_is_refused(name: str) -> None:
    entry = make_entry([("Cache-Control", "max-age=60"), (name, "v")])
    for data in (encode(entry), encode_v1(entry)):
        with pytest.raises(EntryFormatError, match="not a"):
            decode(data)


def _resealed(payload: bytes, version: int = VERSION) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes([version])) if version == 3 else 0)
    return struct.pack("!4sBI", MAGIC, version, crc) + payload


# Version 2's fixed fields, by name (entry_format._FIXED2).
FIELDS = "status flags response_time initial_age lifetime reason primary url_key path head body"
FIELDS += " vary vary_values tags variants"


@pytest.mark.parametrize(
    "field, change",
    [
        ("reason", +1),  # the reason runs into the primary key
        ("body", +1),  # the body runs past the end
        ("body", -1),  # a byte is left over
        ("body", 2**32 - 1 - 100),  # a length as large as the format allows
        ("vary", +1),  # a Vary name that is not there
        ("tags", +3),  # tags that are not there
        ("variants", +1),  # a variant that is not there
        ("flags", +2),  # a flag a later version might set: not guessed at
        ("path", +1),  # a path without the flag that says the entry has its own
    ],
)
def test_a_version_2_value_whose_fields_disagree_with_its_bytes_is_refused(
    field: str, change: int
) -> None:
    # With a valid checksum: what a bug elsewhere, or another program, could have written.
    payload = bytearray(encode(make_entry(body=b"x" * 100))[9:])
    fixed = list(_FIXED2.unpack_from(payload))
    names = FIELDS.split()
    assert len(names) == len(fixed)
    fixed[names.index(field)] += change
    payload[: _FIXED2.size] = _FIXED2.pack(*fixed)
    with pytest.raises(EntryFormatError):
        decode(_resealed(bytes(payload)))


@pytest.mark.parametrize("version", [1, 2])
@given(payload=st.binary(max_size=300))
def test_any_payload_of_either_version_is_an_entry_or_refused(version: int, payload: bytes) -> None:
    with contextlib.suppress(EntryFormatError):
        decode(_resealed(payload, version))


def test_entries_without_vary_tags_or_an_own_path_decode_without_a_rare_part() -> None:
    entry = Entry.build(
        status=200,
        reason="OK",
        headers=CIMultiDict({"Cache-Control": "max-age=60"}),
        body=b"b",
        request_headers=CIMultiDict(),
        request_time=NOW,
        response_time=NOW,
        rules=CacheRules(),
        primary="api/a?x=1",
        url_key="api/a?x=1",
        path="/a",
    )
    assert entry.extras is None and entry.path == "/a"
    back = decode(encode(entry))
    same(back, entry)
    assert back.extras is None and back.primary is back.url_key


@pytest.mark.parametrize("path", ["", "/a|b", "/a?b"])
def test_a_path_that_is_not_the_url_keys_own_is_kept(path: str) -> None:
    entry = dataclasses.replace(make_entry(), extras=EntryExtras.of((), (), (), path, "api/a%7Cb?"))
    assert entry.path == path
    assert decode(encode(entry)).path == path
    assert decode(encode_v1(entry)).path == path


CC_NAMES = ["Cache-Control", "cache-control", "CDN-Cache-Control", "cdn-CACHE-control"]
CC_NAMES += ["X-Cache-Control", "X-CDN-Cache-Control", "Cache-Controls", "X-Other"]
CC_NAMES += [
    "Surrogate-Control",
    "SURROGATE-control",
    "X-Surrogate-Control",
    "CDN-Surrogate-Control",
]
CC_VALUES = ["max-age=60", "no-cache", "s-maxage=5, stale-if-error=9", "no-transform", ""]
CC_VALUES += ["max-age=7", 'a="b:c"', "private", "x, cache-control:max-age=1", "no-store"]
CC_VALUES += ["x, surrogate-control:max-age=2"]


@given(
    lines=st.lists(st.tuples(st.sampled_from(CC_NAMES), st.sampled_from(CC_VALUES)), max_size=5),
    # "İ" is longer in lower case: the head is then searched another way.
    odd=st.booleans(),
)
def test_the_cache_control_read_from_a_packed_head_is_the_headers_own(
    lines: list[tuple[str, str]], odd: bool
) -> None:
    entry = make_entry(
        [("Content-Type", "text/plain"), *([("X-Name", "İ")] if odd else []), *lines]
    )
    assert decode(encode(entry)).cc == entry.cc


def test_surrogate_control_is_read_back_from_a_shared_entry() -> None:
    # Another instance reads the entry from Redis: the freshness Surrogate-Control gave
    # must hold there too, so the stored head keeps the field clients never see.
    entry = make_entry([("Cache-Control", "no-cache"), ("Surrogate-Control", "max-age=60")])
    back = decode(encode(entry))
    assert back.cc == entry.cc
    assert (back.cc.max_age, back.cc.no_cache) == (60, False)
    assert back.headers["Surrogate-Control"] == "max-age=60"


@pytest.mark.parametrize("first", [[], [("X-A", "1")]])
def test_the_cache_control_of_a_head_that_starts_or_ends_oddly(
    first: list[tuple[str, str]],
) -> None:
    entry = make_entry([*first, ("cache-control", "max-age=5"), ("X-Tail", "cdn-")])
    assert decode(encode(entry)).cc.max_age == 5


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    ("where", "text"),
    [("value", "a\rX-Injected: 1"), ("name", "X-A\rB"), ("reason", "OK\r\nX-Injected: 1")],
)
def test_a_line_break_inside_a_stored_field_is_refused(version: str, where: str, text: str) -> None:
    # Whoever can write to the shared Redis must not get a line of their own into the
    # responses every instance sends: such a value is corrupt, a counted miss.
    headers = [("Cache-Control", "max-age=60")]
    if where == "value":
        headers.append(("X-A", text))
    elif where == "name":
        headers.append((text, "1"))
    entry = make_entry(headers)
    if where == "reason":
        entry = dataclasses.replace(entry, reason=text)
    with pytest.raises(EntryFormatError, match="line break"):
        decode(encode_v1(entry) if version == "v1" else encode(entry))
    variant_headers = CIMultiDictProxy(CIMultiDict([("X-A", "a\rb")]))
    plain = make_entry([("Cache-Control", "max-age=60")])
    plain = dataclasses.replace(plain, variants={"br": (variant_headers, b"x")})
    with pytest.raises(EntryFormatError, match="line break"):
        decode(encode(plain, ("br",)) if version == "v2" else encode_v1(plain, ("br",)))
