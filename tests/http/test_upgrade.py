"""Which requests switch protocols, and which 101s are accepted (proxy/http/upgrade.py)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.http.upgrade import WEBSOCKET, UpgradeRules

RULES = UpgradeRules(WEBSOCKET, 60.0, 10)
HANDSHAKE = {"Connection": "Upgrade", "Upgrade": "websocket"}


def offered(
    fields: dict[str, str] | list[tuple[str, str]],
    method: str = "GET",
    version: tuple[int, int] = (1, 1),
    has_body: bool = False,
) -> str | None:
    return RULES.offered(method, version, has_body, CIMultiDict(fields))


def test_a_websocket_handshake_is_offered_as_the_client_spelt_it() -> None:
    assert offered(HANDSHAKE) == "websocket"
    assert offered({"Connection": "keep-alive, UPGRADE", "Upgrade": "WebSocket"}) == "WebSocket"
    # Only the protocols the route allows go on, in the client's order.
    assert offered({"Connection": "upgrade", "Upgrade": "h2c, websocket/13"}) == "websocket/13"
    fields = [("Connection", "keep-alive"), ("Connection", "upgrade"), ("Upgrade", "websocket")]
    assert offered(fields) == "websocket"  # a list over several lines


@pytest.mark.parametrize(
    ("fields", "method", "version", "has_body"),
    [
        (HANDSHAKE, "POST", (1, 1), False),
        (HANDSHAKE, "GET", (1, 0), False),  # RFC 9110 §7.8: ignored in HTTP/1.0
        (HANDSHAKE, "GET", (1, 1), True),
        ({"Upgrade": "websocket"}, "GET", (1, 1), False),  # not listed in Connection
        ({"Connection": "upgrade"}, "GET", (1, 1), False),
        ({"Connection": "upgrade", "Upgrade": "h2c"}, "GET", (1, 1), False),
        ({"Connection": "upgraded", "Upgrade": "websocket"}, "GET", (1, 1), False),
    ],
    ids=["post", "http10", "body", "no-connection", "no-upgrade", "h2c", "not-the-token"],
)
def test_anything_else_is_plain_http(
    fields: dict[str, str], method: str, version: tuple[int, int], has_body: bool
) -> None:
    assert offered(fields, method, version, has_body) is None


@pytest.mark.parametrize(
    ("switched", "ok"),
    [
        (["websocket"], True),
        (["WebSocket"], True),
        (["websocket/13"], True),
        ([], False),
        (["h2c"], False),
        (["websocket, h2c"], False),
    ],
)
def test_a_101_must_name_only_protocols_offered(switched: list[str], ok: bool) -> None:
    assert UpgradeRules.switched_as_offered("websocket", switched) is ok
