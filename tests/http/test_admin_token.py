"""The admin token in an Authorization value: the one check the admin API and PURGE share."""

from __future__ import annotations

import base64

import pytest

from proxy.http.admin_token import AdminToken

TOKEN = "s3cret-tökén"


def basic(user_password: str) -> str:
    return "Basic " + base64.b64encode(user_password.encode()).decode()


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {TOKEN}",
        basic(f"admin:{TOKEN}"),
        basic(f":{TOKEN}"),
        "basic  " + basic(f"x:{TOKEN}")[6:],
    ],
)
def test_the_token_as_bearer_or_as_basic_password_is_carried(value: str) -> None:
    assert AdminToken(TOKEN).carried_by(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"bearer {TOKEN}",  # the exact spelling, as it always was
        f"Bearer  {TOKEN}",
        basic(f"{TOKEN}:wrong"),  # the user name is not the password
        f"Basic {TOKEN}",  # not base64
        "Basic !!!",
        f"Basic Bearer {TOKEN}",
        "Bearer \udcff\udcfe",  # undecodable bytes as aiohttp hands them on: no exception
    ],
)
def test_anything_else_is_not(value: str) -> None:
    assert not AdminToken(TOKEN).carried_by(value)
