"""The admin port's index (`GET /`) and its errors in JSON, through a running proxy."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from proxy import __version__
from tests.conftest import Origin, ProxyProcess, StartProxy
from tests.e2e.test_workers import workers_ready

TOKEN = "s3cret-admin-token"


async def test_the_index_lists_every_endpoint_and_which_need_the_token(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url, admin={"token": TOKEN})
    async with http.get(f"http://127.0.0.1:{proxy.admin_port}/") as resp:  # no token needed
        assert resp.status == 200
        index = await resp.json()
    assert index["version"] == __version__
    found = {(e["method"], e["path"]): e["token"] for e in index["endpoints"]}
    assert found[("GET", "/health")] is False and found[("GET", "/readyz")] is False
    assert found[("GET", "/metrics")] is True and found[("POST", "/cache/purge")] is True
    assert found[("GET", "/dashboard")] is True
    assert ("GET", "/") not in found and not any(m == "HEAD" for m, _ in found)


async def test_unknown_paths_and_methods_get_json_like_every_other_admin_error(
    origin: Origin, start_proxy: StartProxy, http: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(origin.url)
    base = f"http://127.0.0.1:{proxy.admin_port}"
    async with http.get(base + "/nope") as resp:
        assert resp.status == 404 and resp.content_type == "application/json"
        assert await resp.json() == {
            "error": "not_found",
            "message": "no admin endpoint /nope: GET / lists them",
        }
    async with http.delete(base + "/health") as resp:
        assert resp.status == 405 and resp.content_type == "application/json"
        assert (await resp.json())["error"] == "method_not_allowed"
        assert "GET" in resp.headers["Allow"]


async def test_with_workers_the_index_is_one_list_and_404s_are_json(
    origin: Origin, proxy_process: Callable[..., ProxyProcess], http: aiohttp.ClientSession
) -> None:
    proxy = proxy_process(origin.url, workers=2)
    await workers_ready(proxy)
    base = f"http://127.0.0.1:{proxy.admin_port}"
    async with http.get(base + "/") as resp:
        index = await resp.json()
    paths = [(e["method"], e["path"]) for e in index["endpoints"]]
    assert len(paths) == len(set(paths)) and ("GET", "/health") in paths  # not once per worker
    async with http.get(base + "/nope") as resp:  # every worker's 404, merged
        assert resp.status == 404 and (await resp.json())["error"] == "not_found"
