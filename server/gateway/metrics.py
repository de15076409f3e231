"""The gateway's Prometheus metrics (names prefixed `counterpoint_`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("counterpoint_requests", "Requests by endpoint, model, method and HTTP status",
                   ["endpoint", "model", "method", "status"])
LATENCY = Histogram("counterpoint_request_seconds", "End-to-end request latency by method", ["method"],
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
PROMPT_TOKENS = Counter("counterpoint_prompt_tokens", "Prompt tokens processed", ["model"])
GENERATION_TOKENS = Counter("counterpoint_generation_tokens", "Tokens generated", ["model"])
