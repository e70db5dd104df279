"""Who a client is to the limiter: IPv6 hosts by their network, IPv4-mapped ones as IPv4."""

from __future__ import annotations

import ipaddress

import aiohttp
import pytest

from proxy.config.loader import parse_config
from proxy.http.clientaddr import ClientKeys, address_key
from tests.conftest import Origin, StartProxy, config_text, get

# --- pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "prefix", "key"),
    [
        ("2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:aaaa::1", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2:aaaa::1", 128, "2001:db8:1:2:aaaa::1"),
        ("192.0.2.7", 64, "192.0.2.7"),
    ],
)
def test_address_key(address: str, prefix: int, key: str) -> None:
    assert address_key(ipaddress.ip_address(address), prefix) == key


def test_client_keys_read_addresses_as_aiohttp_reports_them() -> None:
    keys = ClientKeys(64)
    assert keys("192.0.2.7") == "192.0.2.7"
    assert keys("::ffff:192.0.2.7") == "192.0.2.7"  # IPv4-mapped: the IPv4 client
    assert keys("2001:db8::1") == keys("2001:db8::ffff:1") == "2001:db8::/64"
    assert keys("2001:db8:0:1::1") != keys("2001:db8::1")
    assert keys("not-an-address:x") == "not-an-address:x"


def test_ipv6_prefix_is_validated_with_its_key_path() -> None:
    with pytest.raises(Exception, match=r"rate_limit\.ipv6_prefix"):
        parse_config(config_text("http://127.0.0.1:1", rate_limit={"ipv6_prefix": 200}), env={})


# --- through the proxy -------------------------------------------------------------------------


async def test_forty_addresses_of_one_ipv6_network_are_one_client(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    # Loopback IPv6 is one address only: the clients come through a trusted front proxy.
    proxy = await start_proxy(
        origin.url, rate_limit={"limits": ["5/minute"]}, trusted_proxies=["127.0.0.1"]
    )
    statuses = []
    for i in range(40):
        resp, _ = await get(http, proxy, "/api", headers={"X-Forwarded-For": f"2001:db8::{i:x}"})
        statuses.append(resp.status)
    assert statuses.count(200) == 5
    # Another /64 is another client; a mapped IPv4 address is its IPv4 client.
    resp, _ = await get(http, proxy, "/api", headers={"X-Forwarded-For": "2001:db8:0:1::1"})
    assert resp.status == 200
    mapped = [{"X-Forwarded-For": "::ffff:203.0.113.9"}, {"X-Forwarded-For": "203.0.113.9"}]
    statuses = [(await get(http, proxy, "/api", headers=h))[0].status for h in mapped * 3]
    assert statuses == [200] * 5 + [429]


async def test_a_configured_prefix_groups_wider(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(
        origin.url,
        rate_limit={"limits": ["2/minute"], "ipv6_prefix": 48},
        trusted_proxies=["127.0.0.1"],
    )
    clients = ["2001:db8:0:1::1", "2001:db8:0:2::1", "2001:db8:0:3::1"]
    statuses = [
        (await get(http, proxy, "/api", headers={"X-Forwarded-For": c}))[0].status for c in clients
    ]
    assert statuses == [200, 200, 429]
