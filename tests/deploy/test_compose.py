"""deploy/compose.yaml: parsed by a Compose-spec parser after variable interpolation, and consistent with the
CLI, the Prometheus scrape config and the Grafana paths."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from compose_spec import PyOptions
from counterpoint.server.cli import parser

DEPLOY = Path(__file__).parents[2] / "deploy"


def interpolate(text: str, env: dict[str, str]) -> str:
    """`${VAR}`, `${VAR:-default}` and `${VAR-default}` as Compose substitutes them."""
    def sub(m: re.Match) -> str:
        name, colon, default = m.group(1), m.group(2), m.group(3) or ""
        value = env.get(name)
        return default if value is None or (colon and value == "") else value
    return re.sub(r"\$\{(\w+)(?:(:?)-([^}]*))?\}", sub, text)


def load(name: str, env: dict[str, str] | None = None) -> dict:
    text = interpolate((DEPLOY / name).read_text(), env or {})
    compose = PyOptions(apply_merge=True).from_yaml(text)  # raises ValueError on anything off-spec
    compose.validate()  # every named volume/network a service uses is declared
    compose.to_spec()  # and the whole file fits the Compose specification models
    return compose.to_dict()


def test_interpolate():
    assert interpolate("${A:-x} ${B-y} ${C}", {"A": "", "B": "", "C": "c"}) == "x  c"


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_compose_parses(variant):
    services = load("compose.yaml", {"COUNTERPOINT_VARIANT": variant})["services"]
    assert set(services) == {"gateway", "worker-1", "worker-2", "prometheus", "grafana"}
    assert services["gateway"]["image"] == f"counterpoint:{variant}"
    assert services["worker-1"]["build"]["args"]["VARIANT"] == variant


def test_compose_rejects_a_bad_file():
    with pytest.raises(ValueError):
        PyOptions(apply_merge=True).from_yaml("services:\n  a:\n    image: x\n    ports: ['http:eighty']\n")


def test_gateway_routes_to_both_workers_and_they_have_health_checks():
    services = load("compose.yaml")["services"]
    gateway = parser().parse_args(services["gateway"]["command"])
    expected = []
    for name in ("worker-1", "worker-2"):
        worker = parser().parse_args(services[name]["command"])
        assert worker.command == "worker"
        expected.append(f"http://{name}:{worker.port}")
        assert f":{worker.port}/health" in " ".join(services[name]["healthcheck"]["test"])
    assert gateway.command == "gateway" and gateway.worker_urls == expected
    assert "/health" in " ".join(services["gateway"]["healthcheck"]["test"])
    assert services["gateway"]["ports"] == [f"{gateway.port}:{gateway.port}"]


def test_prometheus_scrapes_the_gateway_and_every_worker():
    services = load("compose.yaml")["services"]
    mount = next(v for v in services["prometheus"]["volumes"] if "prometheus.yml" in str(v))
    source = str(mount).split(":")[0]
    config = yaml.safe_load((DEPLOY / source).read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"gateway:8000", "worker-1:8100", "worker-2:8100"}


def test_grafana_is_provisioned_from_deploy_grafana():
    volumes = [str(v) for v in load("compose.yaml")["services"]["grafana"]["volumes"]]
    assert any(v.startswith("./grafana/provisioning:/etc/grafana/provisioning") for v in volumes)
    assert any(v.startswith("./grafana/dashboards:") for v in volumes)


def test_gpu_override_gives_each_worker_a_gpu():
    services = load("compose.gpu.yaml")["services"]
    for name in ("worker-1", "worker-2"):
        [device] = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_no_variable_is_left_unset():
    text = (DEPLOY / "compose.yaml").read_text()
    bare = [m for m in re.findall(r"\$\{(\w+)(:?-)?", text) if not m[1] and m[0] not in os.environ]
    assert bare == []  # every variable has a default
