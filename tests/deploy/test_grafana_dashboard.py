"""The Grafana dashboard is current with its generator, and queries only metrics the server exposes."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import counterpoint.server.gateway.metrics  # noqa: F401  (registers the gateway's metrics)
import counterpoint.server.worker.metrics  # noqa: F401

GRAFANA = Path(__file__).parents[2] / "deploy" / "grafana"
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}


def exposed_names() -> set[str]:
    return {fam.name + s for fam in REGISTRY.collect() for s in SUFFIXES.get(fam.type, [""])}


def test_dashboard_is_generated_and_queries_real_metrics():
    dashboard = json.loads((GRAFANA / "dashboards" / "counterpoint.json").read_text())
    assert dashboard == runpy.run_path(str(GRAFANA / "make_dashboard.py"))["dashboard"]()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][0]["query"]["query"])
    used = {m for e in exprs for m in re.findall(r"counterpoint_\w+", e)}
    assert used and used <= exposed_names(), used - exposed_names()
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_provisioning_points_at_the_dashboards_and_prometheus():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus" and ds["datasources"][0]["type"] == "prometheus"
    boards = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "counterpoint.yml").read_text())
    assert boards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
