"""The worker's Prometheus metrics (names prefixed `counterpoint_worker_`), read from the engine at scrape time."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RUNNING = Gauge("counterpoint_worker_running_requests", "Sequence groups in the running batch")
WAITING = Gauge("counterpoint_worker_waiting_requests", "Sequence groups waiting for admission")
KV_USAGE = Gauge("counterpoint_worker_kv_cache_usage_ratio", "Fraction of KV cache blocks in use")
PREEMPTIONS = Gauge("counterpoint_worker_preemptions", "Groups preempted by recomputation since start")
FORWARD_ROWS = Counter("counterpoint_worker_forward_rows", "Rows run through the model, by view kind "
                       "(original, or the contrast view a method adds)", ["view"])

_seen_rows: dict[tuple[int, str], int] = {}  # (id of engine, view) -> rows FORWARD_ROWS already counted


def observe_engine(async_engine) -> None:
    engine = async_engine.engine
    RUNNING.set(len(engine.scheduler.running))
    WAITING.set(len(engine.scheduler.waiting))
    KV_USAGE.set(engine.block_manager.usage)
    PREEMPTIONS.set(engine.scheduler.num_preemptions)
    rows = getattr(engine, "num_rows_by_view", {})  # the vLLM backend does not count rows per view
    for view, total in dict(rows).items():  # dict() copies atomically under the GIL
        key = (id(engine), view)
        FORWARD_ROWS.labels(view).inc(max(0, total - _seen_rows.get(key, 0)))
        _seen_rows[key] = total
