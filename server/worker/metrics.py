"""The worker's Prometheus metrics (names prefixed `counterpoint_worker_`), read from the engine at scrape time."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RUNNING = Gauge("counterpoint_worker_running_requests", "Sequence groups in the running batch")
WAITING = Gauge("counterpoint_worker_waiting_requests", "Sequence groups waiting for admission")
KV_USAGE = Gauge("counterpoint_worker_kv_cache_usage_ratio", "Fraction of KV cache blocks in use")
PREEMPTIONS = Gauge("counterpoint_worker_preemptions", "Groups preempted by recomputation since start")
FORWARD_ROWS = Counter("counterpoint_worker_forward_rows", "Rows run through the model, by view kind "
                       "(original, or the contrast view a method adds)", ["view"])

_seen_rows: dict[str, int] = {}  # view -> rows FORWARD_ROWS already counted


def observe_engine(stats) -> None:
    """Set the gauges from the engine core's latest `EngineStats`."""
    RUNNING.set(stats.num_running)
    WAITING.set(stats.num_waiting)
    KV_USAGE.set(stats.kv_cache_usage)
    PREEMPTIONS.set(stats.num_preemptions)
    for view, total in stats.forward_rows.items():
        FORWARD_ROWS.labels(view).inc(max(0, total - _seen_rows.get(view, 0)))
        _seen_rows[view] = total
