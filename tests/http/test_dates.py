"""HTTP-dates (RFC 9110 §5.6.7): exactly the grammar, nothing email.utils would also take."""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.http.dates import parse_http_date

VALID_DATES = [
    # id, value, epoch seconds
    ("imf-fixdate", "Sun, 06 Nov 1994 08:49:37 GMT", 784111777),
    ("rfc850", "Sunday, 06-Nov-94 08:49:37 GMT", 784111777),
    ("asctime-space-day", "Sun Nov  6 08:49:37 1994", 784111777),
    ("asctime-two-digit-day", "Sun Nov 06 08:49:37 1994", 784111777),
    ("surrounding-ows", " \tSun, 06 Nov 1994 08:49:37 GMT ", 784111777),
    ("leap-second", "Sat, 31 Dec 2016 23:59:60 GMT", 1483228800),
    ("weekday-not-checked", "Mon, 06 Nov 1994 08:49:37 GMT", 784111777),
    ("leap-day", "Thu, 29 Feb 2024 00:00:00 GMT", 1709164800),
    ("year-one", "Mon, 01 Jan 0001 00:00:00 GMT", -62135596800),
    ("year-9999", "Fri, 31 Dec 9999 23:59:59 GMT", 253402300799),
    # Names in any case (a recipient's leniency, not the grammar: see dates.py).
    ("lowercase-gmt", "Sun, 06 Nov 1994 08:49:37 gmt", 784111777),
    ("lowercase-weekday", "sun, 06 Nov 1994 08:49:37 GMT", 784111777),
    ("lowercase-month", "Sun, 06 nov 1994 08:49:37 GMT", 784111777),
    ("uppercase-names", "SUN, 06 NOV 1994 08:49:37 GMT", 784111777),
    ("rfc850-lowercase", "sunday, 06-nov-94 08:49:37 gmt", 784111777),
    ("asctime-mixed-case", "sUN nOV  6 08:49:37 1994", 784111777),
]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"),
    [case[1:] for case in VALID_DATES],
    ids=[case[0] for case in VALID_DATES],
)
def test_parse_http_date_valid(value: str, expected: int) -> None:
    assert parse_http_date(value) == expected


INVALID_DATES = [
    # id, value: each one step from a valid date, and what email.utils used to accept
    ("empty", ""),
    ("zero", "0"),
    ("minus-one", "-1"),
    ("garbage", "garbage"),
    ("utc-zone", "Sun, 06 Nov 1994 08:49:37 UTC"),
    ("numeric-zone", "Sun, 06 Nov 1994 08:49:37 +0000"),
    ("no-zone", "Sun, 06 Nov 1994 08:49:37"),
    ("one-digit-day", "Sun, 6 Nov 1994 08:49:37 GMT"),
    ("one-digit-hour", "Sun, 06 Nov 1994 8:49:37 GMT"),
    ("two-digit-year", "Sun, 06 Nov 94 08:49:37 GMT"),
    ("no-comma", "Sun 06 Nov 1994 08:49:37 GMT"),
    ("no-weekday", "06 Nov 1994 08:49:37 GMT"),
    ("extra-space", "Sun,  06 Nov 1994 08:49:37 GMT"),
    ("tab-separator", "Sun,\t06 Nov 1994 08:49:37 GMT"),
    ("dash-separators", "Sun, 06-Nov-1994 08:49:37 GMT"),
    ("dot-time", "Sun, 06 Nov 1994 08.49.37 GMT"),
    ("no-seconds", "Sun, 06 Nov 1994 08:49 GMT"),
    ("hour-24", "Sun, 06 Nov 1994 24:00:00 GMT"),
    ("minute-60", "Sun, 06 Nov 1994 08:60:00 GMT"),
    ("second-61", "Sun, 06 Nov 1994 08:49:61 GMT"),
    ("day-99", "Sun, 99 Nov 1994 08:49:37 GMT"),
    ("day-00", "Sun, 00 Nov 1994 08:49:37 GMT"),
    ("31-april", "Sun, 31 Apr 1994 08:49:37 GMT"),
    ("29-feb-no-leap", "Sun, 29 Feb 2023 08:49:37 GMT"),
    ("year-0000", "Sun, 01 Jan 0000 00:00:00 GMT"),
    # Case is forgiven, Unicode look-alikes are not (they match `s` and `i` under re.I).
    ("long-s-weekday", "\u017fun, 06 Nov 1994 08:49:37 GMT"),
    ("dotless-i-weekday", "Fr\u0131, 04 Nov 1994 08:49:37 GMT"),
    ("long-s-month", "Sun, 06 \u017fep 1994 08:49:37 GMT"),
    ("long-month", "Sun, 06 November 1994 08:49:37 GMT"),
    ("long-weekday-in-imf", "Sunday, 06 Nov 1994 08:49:37 GMT"),
    ("short-weekday-in-rfc850", "Sun, 06-Nov-94 08:49:37 GMT"),
    ("four-digit-year-in-rfc850", "Sunday, 06-Nov-1994 08:49:37 GMT"),
    ("asctime-one-space-day", "Sun Nov 6 08:49:37 1994"),
    ("asctime-with-zone", "Sun Nov  6 08:49:37 1994 GMT"),
    ("asctime-two-digit-year", "Sun Nov  6 08:49:37 94"),
    ("misspelt-weekday", "Snu, 06 Nov 1994 08:49:37 GMT"),
    ("non-ascii-digits", "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT"),
    ("trailing-garbage", "Sun, 06 Nov 1994 08:49:37 GMTx"),
    ("too-long", "Sun, 06 Nov 1994 08:49:37 GMT" + " " * 80),
]  # fmt: skip


@pytest.mark.parametrize("value", [case[1] for case in INVALID_DATES],
                         ids=[case[0] for case in INVALID_DATES])  # fmt: skip
def test_parse_http_date_invalid_is_none(value: str) -> None:
    assert parse_http_date(value) is None


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEKDAYS_L = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_THIS_YEAR = time.gmtime().tm_year
DATE_FORMS = ("imf-fixdate", "rfc850", "asctime")


@dataclass(frozen=True)
class DateParts:
    """One HTTP-date's tokens, rendered in one of the three forms."""

    form: str
    weekday: str
    day: str
    month: str
    year: str
    hour: str
    minute: str
    second: str
    zone: str = "GMT"
    comma: str = ","
    spaces: tuple[str, ...] = (" ",) * 5  # the form's separators, in order
    time_sep: str = ":"
    date_sep: str = "-"  # RFC 850 only

    def render(self) -> str:
        a, b, c, d, e = self.spaces
        clock = f"{self.hour}{self.time_sep}{self.minute}{self.time_sep}{self.second}"
        if self.form == "imf-fixdate":
            return (
                f"{self.weekday}{self.comma}{a}{self.day}{b}{self.month}{c}{self.year}"
                f"{d}{clock}{e}{self.zone}"
            )
        if self.form == "rfc850":
            s = self.date_sep
            return (
                f"{self.weekday}{self.comma}{a}{self.day}{s}{self.month}{s}{self.year}"
                f"{b}{clock}{c}{self.zone}"
            )
        return f"{self.weekday}{a}{self.month}{b}{self.day}{c}{clock}{d}{self.year}"


@st.composite
def valid_dates(draw: st.DrawFn) -> tuple[DateParts, int]:
    """A date from the grammar in one of its forms, and its epoch seconds."""
    form = draw(st.sampled_from(DATE_FORMS))
    if form == "rfc850":
        # Two-digit years read as at most 50 years ahead (RFC 9110 §5.6.7).
        year = draw(st.integers(_THIS_YEAR - 49, _THIS_YEAR + 50))
    else:
        year = draw(st.integers(1, 9999))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, calendar.monthrange(year, month)[1]))
    hour, minute = draw(st.integers(0, 23)), draw(st.integers(0, 59))
    second = draw(st.integers(0, 60))  # 60: a leap second
    expected = calendar.timegm((year, month, day, hour, minute, second))
    weekday = calendar.weekday(year, month, day)
    parts = DateParts(
        form=form,
        weekday=(_WEEKDAYS_L if form == "rfc850" else _WEEKDAYS)[weekday],
        day=f"{day:2d}" if form == "asctime" and draw(st.booleans()) else f"{day:02d}",
        month=_MONTH_NAMES[month - 1],
        year=f"{year % 100:02d}" if form == "rfc850" else f"{year:04d}",
        hour=f"{hour:02d}",
        minute=f"{minute:02d}",
        second=f"{second:02d}",
    )
    return parts, expected


@settings(max_examples=400, deadline=None)
@given(valid_dates())
def test_parse_http_date_accepts_every_date_of_the_grammar(case: tuple[DateParts, int]) -> None:
    parts, expected = case
    assert parse_http_date(parts.render()) == expected


def _one_digit(value: str) -> str:
    return str(int(value) % 10)


# Each turns a valid date into one that is not: a near miss.
NEAR_MISSES: dict[str, Any] = {
    "zone": lambda p, d: replace(p, zone=d(st.sampled_from(
        ["UTC", "UT", "GMT+0", "+0000", "-0000", "Z", "EST", "CET", ""]
    ))) if p.form != "asctime" else replace(p, year=p.year + " GMT"),
    "one-digit": lambda p, d: replace(p, **{
        (f := d(st.sampled_from(["day", "hour", "minute", "second"]))): _one_digit(getattr(p, f))
    }),
    "comma": lambda p, d: replace(p, comma="") if p.form != "asctime"
    else replace(p, weekday=p.weekday + ","),
    "extra-space": lambda p, d: replace(p, spaces=_respace(p, d, "  ")),
    "other-separator": lambda p, d: replace(
        p, spaces=_respace(p, d, d(st.sampled_from(["\t", "-", "/", "_", "", ".", "\u00a0"])))
    ),
    "time-separator": lambda p, d: replace(p, time_sep=d(st.sampled_from([".", "-", "", " "]))),
    "date-separator": lambda p, d: replace(p, date_sep=d(st.sampled_from([" ", "/", "."])))
    if p.form == "rfc850" else replace(p, month=p.month + d(st.sampled_from(["-", "/", ","]))),
    "hour-range": lambda p, d: replace(p, hour=f"{d(st.integers(24, 99))}"),
    "minute-range": lambda p, d: replace(p, minute=f"{d(st.integers(60, 99))}"),
    "second-range": lambda p, d: replace(p, second=f"{d(st.integers(61, 99))}"),
    "day-range": lambda p, d: replace(p, day=d(st.sampled_from(["00", "32", "45", "99"]))),
    "weekday-name": lambda p, d: replace(p, weekday=d(st.sampled_from([
        p.weekday[::-1], p.weekday + "x", _fullwidth(p.weekday[0]) + p.weekday[1:],
        # the other form's names
        (_WEEKDAYS if p.form == "rfc850" else _WEEKDAYS_L)[_weekday_index(p.weekday)],
    ]))),
    "month-name": lambda p, d: replace(p, month=d(st.sampled_from(
        [p.month[::-1], p.month + ".", "Sept" if p.month == "Sep" else "Juni"]
    ))),
    "year-digits": lambda p, d: replace(
        p, year=p.year[:-1] if p.form != "rfc850" else "19" + p.year
    ),
    "trailing": lambda p, d: replace(p, zone=p.zone + d(st.sampled_from(["x", " x", "0", ","])))
    if p.form != "asctime" else replace(p, year=p.year + d(st.sampled_from(["x", "0", ","]))),
}  # fmt: skip


def _fullwidth(letter: str) -> str:
    """The same letter from the Unicode fullwidth block: it looks right, and is not ASCII."""
    return chr(ord(letter) + 0xFEE0)


def _weekday_index(name: str) -> int:
    return (_WEEKDAYS_L if len(name) > 3 else _WEEKDAYS).index(name)


def _respace(parts: DateParts, draw: st.DrawFn, separator: str) -> tuple[str, ...]:
    # asctime's four separators (the fifth is unused), the others' as many as they have.
    count = {"imf-fixdate": 5, "rfc850": 3, "asctime": 4}[parts.form]
    index = draw(st.integers(0, count - 1))
    return (*parts.spaces[:index], separator, *parts.spaces[index + 1 :])


def _recase(text: str, data: st.DataObject) -> str:
    return "".join(c.upper() if data.draw(st.booleans()) else c.lower() for c in text)


@settings(max_examples=300, deadline=None)
@given(valid_dates(), st.data())
def test_parse_http_date_names_are_read_in_any_case(
    case: tuple[DateParts, int], data: st.DataObject
) -> None:
    parts, expected = case
    recased = replace(
        parts,
        weekday=_recase(parts.weekday, data),
        month=_recase(parts.month, data),
        zone=_recase(parts.zone, data),
    )
    assert parse_http_date(recased.render()) == expected


@settings(max_examples=600, deadline=None)
@given(valid_dates(), st.sampled_from(sorted(NEAR_MISSES)), st.data())
def test_parse_http_date_rejects_near_misses(
    case: tuple[DateParts, int], defect: str, data: st.DataObject
) -> None:
    parts, _ = case
    broken = NEAR_MISSES[defect](parts, data.draw)
    value = broken.render()
    assert value != parts.render()  # a defect that changed nothing tests nothing
    assert parse_http_date(value) is None, (defect, value)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_parse_http_date_never_raises(value: str) -> None:
    result = parse_http_date(value)
    assert result is None or isinstance(result, float)
