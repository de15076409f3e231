"""Prometheus exposition of the gateway and the worker after real requests."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0,
        "ignore_eos": True}


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(found: dict[str, list], name: str, **labels) -> float:
    return sum(s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_gateway_metrics_by_method_and_arm(ab_client):
    before = samples(ab_client.get("/metrics").text)
    r = ab_client.post("/v1/chat/completions", json={**CHAT, "user": "dave", "decoding": {"experiment": "greedy-ab"},
                                                     "stream": True})
    assert r.status_code == 200
    arm = next(x for x in r.text.splitlines() if '"arm"' in x).split('"arm":"')[1].split('"')[0]
    ab_client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    resp = ab_client.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain")
    after = samples(resp.text)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("counterpoint_requests_total", model="tiny", method="plain", arm=arm, status="200") == 1
    assert delta("counterpoint_requests_total", model="nope", status="404") == 1
    assert delta("counterpoint_time_to_first_token_seconds_count", method="plain") == 1
    assert delta("counterpoint_inter_token_latency_seconds_count", method="plain") == 4  # 5 tokens, 4 gaps
    assert delta("counterpoint_e2e_request_latency_seconds_count", method="plain") == 1
    assert delta("counterpoint_generation_tokens_total", model="tiny") == 5
    assert delta("counterpoint_prompt_tokens_total", model="tiny") > 0
    assert "counterpoint_gateway_requests_in_flight" in after
    assert all(name.startswith("counterpoint_") for name in after if not name.startswith(("python_", "process_")))


def test_worker_metrics(tiny_worker, gateway_client):
    before = samples(httpx.get(f"{tiny_worker.url}/metrics").text)
    gateway_client.post("/v1/chat/completions", json=CHAT)
    after = samples(httpx.get(f"{tiny_worker.url}/metrics").text)
    rows = value(after, "counterpoint_worker_forward_rows_total", view="original") - \
        value(before, "counterpoint_worker_forward_rows_total", view="original")
    assert rows == 5  # one prefill row, then one decode row per further token (the last token needs no forward)
    for name in ("counterpoint_worker_running_requests", "counterpoint_worker_waiting_requests",
                 "counterpoint_worker_kv_cache_usage_ratio"):
        assert name in after
    assert 0 <= value(after, "counterpoint_worker_kv_cache_usage_ratio") <= 1
