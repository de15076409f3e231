"""The gateway's Prometheus metrics (names prefixed `counterpoint_`).

Latency histograms are measured where the client feels them: from the request's arrival at the gateway
to the first generated token (TTFT), between generated tokens (inter-token), and to the last event (e2e).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_GAPS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)

REQUESTS = Counter("counterpoint_requests", "Completion requests by model, method, A/B arm and HTTP status",
                   ["model", "method", "arm", "status"])
TTFT = Histogram("counterpoint_time_to_first_token_seconds", "Request arrival to first generated token",
                 ["method"], buckets=_SECONDS)
INTER_TOKEN = Histogram("counterpoint_inter_token_latency_seconds", "Gap between generated tokens of a choice",
                        ["method"], buckets=_GAPS)
E2E = Histogram("counterpoint_e2e_request_latency_seconds", "Request arrival to its last token", ["method"],
                buckets=_SECONDS)
PROMPT_TOKENS = Counter("counterpoint_prompt_tokens", "Prompt tokens processed", ["model"])
GENERATION_TOKENS = Counter("counterpoint_generation_tokens", "Tokens generated", ["model"])
IN_FLIGHT = Gauge("counterpoint_gateway_requests_in_flight", "Completion requests the gateway is answering")
FEEDBACK = Counter("counterpoint_feedback", "Feedback received, by whether the completion was found", ["found"])
