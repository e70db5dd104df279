"""Configured regular expressions, compiled with RE2 (google-re2).

Python's `re` backtracks: `/api/(a+)+$` against a 31-byte path stalled the event loop, and so
every client, for 46 s. RE2 matches in time linear in the input whatever the pattern, and
refuses what it cannot do that way (lookarounds, backreferences) when the config is loaded.
google-re2 never falls back to `re`: a pattern RE2 cannot take raises `re2.error`.
"""

from __future__ import annotations

from collections.abc import Callable

import re2

__all__ = ["Matcher", "check", "full_matcher", "prefix_matcher"]

# How RE2 words its refusal of a lookaround (`(?=`, `(?<!`...) or a backreference (`\1`).
_UNSUPPORTED = ("invalid perl operator", "invalid escape sequence")

# Whether a request string matches a configured pattern.
Matcher = Callable[[str], bool]


def _compile(pattern: str, *, ignore_case: bool = False) -> re2._Regexp:
    options = re2.Options()
    options.log_errors = False  # the error is reported with its key path instead, once
    options.case_sensitive = not ignore_case
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        if reason.startswith(_UNSUPPORTED):
            reason += (
                " (RE2 syntax: no lookarounds or backreferences, which can take exponential time)"
            )
        raise ValueError(f"invalid regular expression {pattern!r}: {reason}") from None


def check(pattern: str) -> str:
    """A config validator: *pattern* unchanged, or ValueError saying why RE2 refuses it."""
    _compile(pattern)
    return pattern


def _encoded(text: str) -> bytes:
    # aiohttp decodes request lines and headers with surrogateescape: give RE2 the bytes the
    # client sent (invalid UTF-8 then matches nothing it should not), never an exception.
    # Bytes also skip the str wrapper's offset bookkeeping: a match costs about half.
    return text.encode("utf-8", "surrogateescape")


def prefix_matcher(pattern: str) -> Matcher:
    """Matches when *pattern* matches at the start of the text (like `re.match`)."""
    match = _compile(pattern).match
    return lambda text: match(_encoded(text)) is not None


def full_matcher(pattern: str, *, ignore_case: bool = False) -> Matcher:
    """Matches when *pattern* matches the whole text (like `re.fullmatch`)."""
    fullmatch = _compile(pattern, ignore_case=ignore_case).fullmatch
    return lambda text: fullmatch(_encoded(text)) is not None
