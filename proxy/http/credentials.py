"""`Authorization` values (RFC 9110 §11.4), read one way by every stage: pure, no imports.

`credentials = auth-scheme [ 1*SP ( token68 / #auth-param ) ]`, the scheme case-insensitive.
Origins are looser than the grammar: many split on any whitespace (`value.split()`), tabs
and, once a server has decoded the bytes as Latin-1, NBSP (0xA0) and NEL (0x85) included. So
the revocation check, the rate limiter's `bearer` key and per-user cache keys split the same
way, and `Bearer<TAB>x`, `bearer  x` and `Bearer x` are one credential everywhere.
"""

from __future__ import annotations

from typing import NamedTuple


class Credentials(NamedTuple):
    scheme: str  # lower-cased
    words: tuple[str, ...]  # what follows the scheme, split on whitespace

    @property
    def canonical(self) -> str:
        """One spelling per credential: `Bearer x` for `bearer<TAB>x`. The usual spelling
        is its own canonical form, so keys made from it before stay the same."""
        return " ".join((self.scheme.capitalize(), *self.words))


def _latin1(value: str) -> str:
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: a lone 0xA0 is "\udca0".
    # A server decoding as Latin-1 sees "\xa0", which str.split() treats as a separator.
    return "".join(chr(ord(c) - 0xDC00) if 0xDC80 <= ord(c) <= 0xDCFF else c for c in value)


def parse(value: str) -> Credentials | None:
    """The scheme and the words after it; None for an empty value."""
    words = value.split() if value.isascii() else _latin1(value).split()
    if not words:
        return None
    return Credentials(words[0].lower(), tuple(words[1:]))


def bearer(value: str) -> str | None:
    """The token of a `Bearer` credential (several words joined by one space); else None."""
    parsed = parse(value)
    if parsed is None or parsed.scheme != "bearer" or not parsed.words:
        return None
    return " ".join(parsed.words)
