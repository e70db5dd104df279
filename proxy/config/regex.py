"""Configured regular expressions: compiled with RE2 (google-re2), refused with a reason.

Python's `re` backtracks: `/api/(a+)+$` against a 31-byte path stalled the event loop, and so
every client, for 46 s. RE2 matches in time linear in the input whatever the pattern, and
refuses what it cannot do that way (lookarounds, backreferences) when the config is loaded.
google-re2 never falls back to `re`: a pattern RE2 cannot take raises `re2.error`.
Matching request text against a compiled pattern is proxy/http/regex.py's.
"""

from __future__ import annotations

import re2

__all__ = ["check", "compile_pattern"]

# How RE2 words its refusal of a lookaround (`(?=`, `(?<!`...) or a backreference (`\1`).
_UNSUPPORTED = ("invalid perl operator", "invalid escape sequence")


def compile_pattern(pattern: str, *, ignore_case: bool = False) -> re2._Regexp:
    """*pattern* compiled by RE2, or ValueError saying why RE2 refuses it."""
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
    compile_pattern(pattern)
    return pattern
