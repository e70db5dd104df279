"""docker-compose.yml and deploy/kubernetes/ checked against the Dockerfile and the config.

Parsed, not run (no Docker or cluster here): ports, paths, probes and environment must agree
with what the image exposes and what each config file, loaded as the proxy loads it, says.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from yarl import URL

from proxy.config.loader import ConfigError, Settings, load_config, parse_config
from proxy.config.schema import config_schema
from tests.conftest import ROOT

SECRET = "placeholder-secret"  # what a Secret would hold


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    steps = [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]
    last_from = max(i for i, step in enumerate(steps) if step[0] == "FROM")
    return [(step[0].upper(), step[1] if len(step) > 1 else "") for step in steps[last_from:]]


class Image:
    def __init__(self) -> None:
        steps = dockerfile()
        self.env: dict[str, str] = {}
        for kind, args in steps:
            if kind == "ENV":
                for pair in shlex.split(args):
                    name, _, value = pair.partition("=")
                    self.env[name] = value
        by_kind = {kind: args for kind, args in steps}
        self.args = {
            a.split("=")[0]: a.split("=")[1] for kind, a in steps if kind == "ARG" and "=" in a
        }
        self.user = by_kind["USER"]
        self.entrypoint = json.loads(by_kind["ENTRYPOINT"])
        self.cmd = json.loads(by_kind["CMD"])
        self.exposed = {int(p) for p in by_kind["EXPOSE"].split()}
        self.healthcheck = by_kind["HEALTHCHECK"]
        copies = [a.split() for kind, a in steps if kind == "COPY" and "config.yaml" in a]
        self.config_source = ROOT / copies[0][-2]  # the image's own config, in the repository
        self.config_path = copies[0][-1]
        self.uid = int(self.args["UID"])

    def load(self, path: Path, **env: str) -> Settings:
        return load_config(path, env={**self.env, **env})


@pytest.fixture(scope="module")
def image() -> Image:
    return Image()


@pytest.fixture(scope="module")
def schema() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(config_schema())


# What a user of the image must give it: where the API is, and the admin token.
REQUIRED = {"CACHEPROXY_UPSTREAM__URL": "http://api:8000", "CACHEPROXY_ADMIN__TOKEN": SECRET}


def test_dockerfile_agrees_with_its_config(image: Image) -> None:
    assert image.entrypoint == ["cacheproxy"]
    assert image.cmd == ["run", "--config", image.config_path]
    assert image.config_path == "/etc/cacheproxy/config.yaml"
    assert image.config_source == ROOT / "deploy/image/config.yaml"  # not the rich example
    assert image.user not in ("root", "0") and image.uid != 0
    config = image.load(image.config_source, **REQUIRED)
    assert image.exposed == {config.listen.port, config.admin.port}
    assert config.listen.host == config.admin.host == "0.0.0.0"
    assert "/readyz" in image.healthcheck and str(config.admin.port) in image.healthcheck
    assert "CACHEPROXY_ADMIN__PORT" in image.healthcheck  # follows the override of the port


def test_the_image_config_caches_and_leaves_everything_else_off(image: Image) -> None:
    config = image.load(image.config_source, **REQUIRED)
    assert config.upstream.url == "http://api:8000" and config.admin.token == SECRET
    assert config.cache is not None and config.cache.enabled and config.cache.ttl is None
    assert (config.rate_limit, config.cors, config.compression, config.routes) == (
        None,
        None,
        None,
        (),
    )
    assert (config.redis, config.workers, config.trusted_proxies) == (None, 1, ())
    # What the old image's config read is a variable of the one prefix now.
    scaled = image.load(
        image.config_source,
        **REQUIRED,
        CACHEPROXY_WORKERS="4",
        CACHEPROXY_REDIS__URL="redis://redis:6379/0",
        CACHEPROXY_CACHE__TIERS='["memory", "redis"]',
    )
    assert scaled.workers == 4 and scaled.redis is not None
    assert scaled.redis.url == "redis://redis:6379/0"
    assert scaled.cache is not None and scaled.cache.tiers == ("memory", "redis")


def test_image_refuses_an_open_admin_port_without_a_token(image: Image) -> None:
    with pytest.raises(ConfigError) as refused:
        image.load(image.config_source, CACHEPROXY_UPSTREAM__URL="http://api:8000")
    (problem,) = [p for p in refused.value.problems if p.startswith("admin.host:")]
    assert "CACHEPROXY_ADMIN__TOKEN" in problem  # names what to set
    # Outside a container the example stays on loopback and needs no token.
    assert load_config(ROOT / "config.yaml", env={}).admin.host == "127.0.0.1"


def _ports(mappings: list[str]) -> set[int]:
    return {int(m.rsplit(":", 1)[-1]) for m in mappings}


def test_compose(image: Image, schema: jsonschema.Draft202012Validator) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"proxy", "redis", "api"}
    proxy, api = services["proxy"], services["api"]
    (mount,) = proxy["volumes"]
    source, target, *_ = mount.split(":")
    assert target == image.config_path
    path = ROOT / source
    assert _errors(schema, yaml.safe_load(path.read_text())) == []
    env = {k: (SECRET if "${" in v else v) for k, v in proxy["environment"].items()}
    config = image.load(path, **env)
    assert config.workers == 2
    assert _ports(proxy["ports"]) == {config.listen.port, config.admin.port}
    assert "127.0.0.1:" in next(p for p in proxy["ports"] if p.endswith(f":{config.admin.port}"))
    upstream = URL(config.upstream.target_list[0].url)
    command = api["command"]
    assert upstream.host == "api" and command[0] == "demo-upstream"
    assert upstream.port == int(command[command.index("--port") + 1])
    assert config.redis is not None and URL(config.redis.url or "").host == "redis"
    assert config.cache is not None and "redis" in config.cache.tiers
    assert set(proxy["depends_on"]) == {"redis", "api"}
    assert proxy["environment"]["CACHEPROXY_ADMIN__TOKEN"].startswith("${ADMIN_TOKEN:?")  # required
    assert config.admin.token == SECRET
    # SIGTERM takes the delay, then the grace: Docker must not SIGKILL before both are over.
    stop_after = float(proxy["stop_grace_period"].removesuffix("s"))
    assert stop_after > config.shutdown_delay + config.shutdown_grace


def _errors(validator: jsonschema.Draft202012Validator, doc: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes" / name).read_text()) if d]


def _proxy_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    for doc in docs:
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            for container in pod["containers"]:
                if container["image"].startswith("cacheproxy:"):
                    return doc, container
    raise AssertionError("no cacheproxy container")


def _memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("name", ["sidecar.yaml", "replicas-redis.yaml"])
def test_kubernetes(image: Image, schema: jsonschema.Draft202012Validator, name: str) -> None:
    docs = _docs(name)
    deployment, container = _proxy_container(docs)
    pod = deployment["spec"]["template"]["spec"]
    # The config: from a ConfigMap, mounted where the image's CMD reads it.
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert mount["mountPath"] == str(Path(image.config_path).parent)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    (configmap,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
    ]
    text = configmap["data"][Path(image.config_path).name]
    assert _errors(schema, yaml.safe_load(text)) == []
    env = {e["name"]: e.get("value", SECRET) for e in container.get("env", [])}
    config = parse_config(text, name, env={**image.env, **env})
    assert container["args"] == image.cmd
    # Ports and probes.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": config.listen.port, "admin": config.admin.port}
    assert set(ports.values()) <= image.exposed
    ready, live = container["readinessProbe"], container["livenessProbe"]
    # The proxy's own state, never the API's: an API outage must not empty the Service.
    assert ready["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert live["httpGet"] == {"path": "/livez", "port": "admin"}
    # No SIGKILL before the delay (endpoints catching up) and the drain are over.
    assert pod["terminationGracePeriodSeconds"] > config.shutdown_delay + config.shutdown_grace
    # Resources: the cache's budget fits under the memory limit.
    resources = container["resources"]
    assert set(resources) == {"requests", "limits"}
    assert config.cache is not None
    assert config.cache.max_memory < _memory_bytes(resources["limits"]["memory"])
    assert container["securityContext"]["runAsUser"] == image.uid
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])  # workers' sockets
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    upstream = URL(config.upstream.target_list[0].url)
    if name == "sidecar.yaml":
        (api,) = [c for c in pod["containers"] if c is not container]
        assert upstream.host == "127.0.0.1"
        assert upstream.port in {p["containerPort"] for p in api["ports"]}
    else:
        assert deployment["spec"]["replicas"] >= 2
        assert config.redis is not None
        redis = URL(config.redis.url or "")
        assert redis.host in services
        assert redis.port in {p["port"] for p in services[redis.host]["spec"]["ports"]}
        assert config.cache.key_secret == SECRET  # one secret for every replica
    # The Service reaches the proxy port by name.
    targets = {p["targetPort"] for s in services.values() for p in s["spec"]["ports"]}
    assert "http" in targets
