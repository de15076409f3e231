"""Writes dashboards/counterpoint.json: run `python deploy/grafana/make_dashboard.py` after changing a panel."""

from __future__ import annotations

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"


def q(kind: str, metric: str, by: str) -> str:
    return f'histogram_quantile({kind}, sum by (le, {by}) (rate({metric}_bucket{{method=~"$method"}}[{RATE}])))'


PANELS = [  # (title, unit, [(expr, legend)])
    ("Requests per second by method and arm", "reqps",
     [(f'sum by (method, arm) (rate(counterpoint_requests_total{{method=~"$method",status="200"}}[{RATE}]))',
       "{{method}} {{arm}}")]),
    ("Errors per second by status", "reqps",
     [(f'sum by (status) (rate(counterpoint_requests_total{{status!="200"}}[{RATE}]))', "{{status}}")]),
    ("Time to first token (p50, p95) by method", "s",
     [(q("0.5", "counterpoint_time_to_first_token_seconds", "method"), "p50 {{method}}"),
      (q("0.95", "counterpoint_time_to_first_token_seconds", "method"), "p95 {{method}}")]),
    ("Inter-token latency (p50, p95) by method", "s",
     [(q("0.5", "counterpoint_inter_token_latency_seconds", "method"), "p50 {{method}}"),
      (q("0.95", "counterpoint_inter_token_latency_seconds", "method"), "p95 {{method}}")]),
    ("End-to-end latency (p50, p95) by method", "s",
     [(q("0.5", "counterpoint_e2e_request_latency_seconds", "method"), "p50 {{method}}"),
      (q("0.95", "counterpoint_e2e_request_latency_seconds", "method"), "p95 {{method}}")]),
    ("Tokens per second", "short",
     [(f"sum by (model) (rate(counterpoint_prompt_tokens_total[{RATE}]))", "prompt {{model}}"),
      (f"sum by (model) (rate(counterpoint_generation_tokens_total[{RATE}]))", "generated {{model}}")]),
    ("Running and waiting requests per worker", "short",
     [("counterpoint_worker_running_requests", "running {{instance}}"),
      ("counterpoint_worker_waiting_requests", "waiting {{instance}}"),
      ("sum(counterpoint_gateway_requests_in_flight)", "gateway in flight")]),
    ("KV cache usage per worker", "percentunit",
     [("counterpoint_worker_kv_cache_usage_ratio", "{{instance}}")]),
    ("Forward rows per second by view kind", "short",
     [(f"sum by (view) (rate(counterpoint_worker_forward_rows_total[{RATE}]))", "{{view}}")]),
    ("Feedback per second", "short",
     [(f"sum by (found) (rate(counterpoint_feedback_total[{RATE}]))", "found={{found}}")]),
]


def panel(i: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict:
    return {"id": i + 1, "type": "timeseries", "title": title, "datasource": DS,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
            "targets": [{"datasource": DS, "expr": e, "legendFormat": leg, "refId": chr(65 + j)}
                        for j, (e, leg) in enumerate(targets)]}


def dashboard() -> dict:
    method = {"name": "method", "label": "method", "type": "query", "datasource": DS, "includeAll": True,
              "multi": True, "allValue": ".*", "refresh": 2, "current": {"text": "All", "value": "$__all"},
              "query": {"query": "label_values(counterpoint_requests_total, method)", "refId": "method"}}
    return {"uid": "counterpoint", "title": "counterpoint", "tags": ["counterpoint"], "timezone": "browser",
            "schemaVersion": 39, "version": 1, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": [method]}, "annotations": {"list": []},
            "panels": [panel(i, *p) for i, p in enumerate(PANELS)]}


if __name__ == "__main__":
    out = Path(__file__).parent / "dashboards" / "counterpoint.json"
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {out}")
