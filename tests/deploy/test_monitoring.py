"""The shipped Prometheus rules and Grafana dashboard (deploy/prometheus, deploy/grafana):
promtool accepts the rules and their unit tests pass, and every series and label they use is
one a running proxy's /metrics really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, Origin, StartProxy, get
from tests.redis_servers import RedisServer

RULES = ROOT / "deploy/prometheus/alerts.yml"
RULE_TESTS = ROOT / "deploy/prometheus/alerts_test.yml"
DASHBOARD = ROOT / "deploy/grafana/cacheproxy.json"
# A series name, and the `by (...)` labels an aggregation groups it by.
SERIES = re.compile(r"\bcacheproxy_[a-z_]+\b")
GROUPED = re.compile(r"by \(([^)]*)\) \((?:\w+\()?(cacheproxy_[a-z_]+)")
# Labels Prometheus adds, or histograms have, beside the proxy's own.
ADDED = {"job", "instance", "le"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is needed to check deploy/prometheus: `apt-get install prometheus` "
            "(scripts/test.sh installs it when run as root)",
            pytrace=False,
        )
    return path


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    for command in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        done = subprocess.run(
            [promtool(), *command], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert done.returncode == 0, done.stdout + done.stderr


def expressions() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    found = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    found += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    found += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


def test_the_dashboard_is_one_grafana_document() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"


async def test_every_series_and_label_used_is_exported(
    origin: Origin,
    redis_server: RedisServer,
    start_proxy: StartProxy,
    http: aiohttp.ClientSession,
) -> None:
    # Everything that exports series: a caching route, a shared rate limit, Redis, a request.
    proxy = await start_proxy(
        origin.url,
        cache={"ttl": 30},
        redis={"url": redis_server.url},
        rate_limit={"limits": ["100/minute"]},
    )
    await get(http, proxy, "/a")
    await get(http, proxy, "/a")
    url = f"http://127.0.0.1:{proxy.admin_port}/metrics"
    async with http.get(url, headers={"Accept-Encoding": "identity"}) as resp:
        text = await resp.text()
    # Each series name the page declares, and the labels its samples carry. A labelled
    # counter that has counted nothing yet (Redis errors, say) is declared with no samples:
    # its name is checked, its labels cannot be.
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        for name in (family.name, *(family.name + s for s in suffixes.get(family.type, ()))):
            labels.setdefault(name, set())
        for sample in family.samples:
            labels[sample.name].update(sample.labels)
            labels[family.name].update(sample.labels)
    for expr in expressions():
        for name in SERIES.findall(expr):
            assert name in labels, f"{name} is not exported (in {expr!r})"
        for grouped, name in GROUPED.findall(expr):
            wanted = {g.strip() for g in grouped.split(",")} - ADDED
            if labels[name]:
                assert wanted <= labels[name], f"{name} has no label {wanted - labels[name]}"
