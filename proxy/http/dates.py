"""HTTP-dates (RFC 9110 §5.6.7): `Expires`, `Date`, `Last-Modified`, `If-Modified-Since`,
`If-Range`, `Retry-After`. Pure, no I/O."""

from __future__ import annotations

import functools
import re
import time
from datetime import date
from typing import Final

# RFC 9110 §5.6.7: HTTP-date is exactly one of three forms, with single spaces. email.utils
# accepts much more (other zones, one-digit fields, missing commas), so a value another cache
# rejects as invalid would get a real date here. Only the names' case is forgiven: the grammar
# makes them case-sensitive, but origins do send `jan` and `gmt`, and the cache-tests
# conformance suite counts reading them as optimal; taking such an `Expires` as "already
# expired" (RFC 9111 §5.3) would turn a cacheable API into a miss on every request. ASCII
# only: under Unicode IGNORECASE, U+017F (long s) matches `s` and U+0131 (dotless i) `i`.
_FLAGS: Final = re.IGNORECASE | re.ASCII
_DAY_NAME = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_DAY_NAME_L = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = "(?P<month>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = "(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
_IMF_FIXDATE: Final = re.compile(
    f"{_DAY_NAME}, (?P<day>[0-9]{{2}}) {_MONTH} (?P<year>[0-9]{{4}}) {_TIME} GMT", _FLAGS
)
_RFC850_DATE: Final = re.compile(
    f"{_DAY_NAME_L}, (?P<day>[0-9]{{2}})-{_MONTH}-(?P<year>[0-9]{{2}}) {_TIME} GMT", _FLAGS
)
_ASCTIME_DATE: Final = re.compile(
    f"{_DAY_NAME} {_MONTH} (?P<day>[0-9]{{2}}| [0-9]) {_TIME} (?P<year>[0-9]{{4}})", _FLAGS
)
_MONTHS: Final = {
    name.lower(): number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
# RFC 850's two-digit years are read relative to this (§5.6.7: a year more than 50 years
# ahead is in the past century). Taken once: a process does not run for decades.
_THIS_YEAR: Final = time.gmtime().tm_year
# The longest valid form (RFC 850, long weekday) is 33 characters.
_HTTP_DATE_MAX_LEN: Final = 64


def parse_http_date(value: str) -> float | None:
    """HTTP-date (RFC 9110 §5.6.7) → epoch seconds, or None when it is not one.

    Exactly IMF-fixdate, the obsolete RFC 850 form and asctime, by their ABNF but for
    the case of the names (`jan`, `SUN`, `gmt`: see above): separators single spaces,
    every field two digits (asctime's day may be a space and one digit), the zone GMT. Ranges
    are checked (hour 00-23, minute 00-59, second 00-60, a day that exists in its
    month); a weekday that does not match the date is accepted (the grammar does not
    tie them). Surrounding spaces are not part of a field value (RFC 9110 §5.5).
    """
    if len(value) > _HTTP_DATE_MAX_LEN:
        return None
    return _parse_http_date(value.strip(" \t"))


@functools.lru_cache(maxsize=512)
def _parse_http_date(value: str) -> float | None:
    # Memoised: Expires / Last-Modified values repeat across responses.
    match = _IMF_FIXDATE.fullmatch(value) or _ASCTIME_DATE.fullmatch(value)
    if match is not None:
        year = int(match["year"])
    else:
        match = _RFC850_DATE.fullmatch(value)
        if match is None:
            return None
        year = _rfc850_year(int(match["year"]))
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"])
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second
        return None
    try:
        days = date(year, _MONTHS[match["month"].lower()], int(match["day"])).toordinal()
    except ValueError:  # 31 Feb, day 00, year 0000
        return None
    return float((days - _EPOCH_ORDINAL) * 86400 + hour * 3600 + minute * 60 + second)


def _rfc850_year(two_digits: int) -> int:
    """The latest year ending in these digits that is at most 50 years ahead."""
    latest = _THIS_YEAR + 50
    return latest - (latest - two_digits) % 100
