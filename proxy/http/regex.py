"""Matching request text against configured regular expressions (RE2: linear time).

The patterns are compiled, and refused with a reason, by proxy/config/regex.py.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.config.regex import compile_pattern

__all__ = ["Matcher", "full_matcher", "prefix_matcher"]

# Whether a request string matches a configured pattern.
Matcher = Callable[[str], bool]


def _encoded(text: str) -> bytes:
    # aiohttp decodes request lines and headers with surrogateescape: give RE2 the bytes the
    # client sent (invalid UTF-8 then matches nothing it should not), never an exception.
    # Bytes also skip the str wrapper's offset bookkeeping: a match costs about half.
    return text.encode("utf-8", "surrogateescape")


def prefix_matcher(pattern: str) -> Matcher:
    """Matches when *pattern* matches at the start of the text (like `re.match`)."""
    match = compile_pattern(pattern).match
    return lambda text: match(_encoded(text)) is not None


def full_matcher(pattern: str, *, ignore_case: bool = False) -> Matcher:
    """Matches when *pattern* matches the whole text (like `re.fullmatch`)."""
    fullmatch = compile_pattern(pattern, ignore_case=ignore_case).fullmatch
    return lambda text: fullmatch(_encoded(text)) is not None
