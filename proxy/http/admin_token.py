"""Does an `Authorization` value carry the admin token? One constant-time check, for the admin
API and for a PURGE on the proxy port: pure, standard library only.

`Bearer <token>`; or, as a browser (the dashboard) sends it once asked, HTTP Basic auth with
the token as the password and any user name.
"""

from __future__ import annotations

import base64
import binascii
import hmac


def _basic_password(given: bytes) -> bytes | None:
    """The password of `Basic base64(user:password)`, or None."""
    scheme, _, value = given.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True).partition(b":")[2]
    except (binascii.Error, ValueError):
        return None


class AdminToken:
    """The configured token, encoded once."""

    __slots__ = ("_bearer", "_secret")

    def __init__(self, token: str) -> None:
        self._secret = token.encode("utf-8", "surrogateescape")
        self._bearer = b"Bearer " + self._secret

    def carried_by(self, authorization: str) -> bool:
        """`authorization`: the field's value as aiohttp gives it ("" when absent)."""
        # aiohttp decodes header bytes with surrogateescape, so encoding back the same way
        # gives the bytes as sent: no header, however malformed, can make this raise.
        given = authorization.encode("utf-8", "surrogateescape")
        password = _basic_password(given)
        # Constant time: the comparison must not leak how much of a guess was right.
        if password is not None:
            return hmac.compare_digest(password, self._secret)
        return hmac.compare_digest(given, self._bearer)
