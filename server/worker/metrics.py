"""The worker's Prometheus metrics (names prefixed `counterpoint_worker_`)."""

from __future__ import annotations

from prometheus_client import Gauge

RUNNING = Gauge("counterpoint_worker_running_requests", "Sequence groups in the running batch")
WAITING = Gauge("counterpoint_worker_waiting_requests", "Sequence groups waiting for admission")
KV_USAGE = Gauge("counterpoint_worker_kv_cache_usage_ratio", "Fraction of KV cache blocks in use")
PREEMPTIONS = Gauge("counterpoint_worker_preemptions", "Groups preempted by recomputation since start")


def observe_engine(async_engine) -> None:
    engine = async_engine.engine
    RUNNING.set(len(engine.scheduler.running))
    WAITING.set(len(engine.scheduler.waiting))
    KV_USAGE.set(engine.block_manager.usage)
    PREEMPTIONS.set(engine.scheduler.num_preemptions)
