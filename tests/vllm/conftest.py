"""vLLM backend tests: run by `.ci/vllm.sh` inside the vLLM virtual environment (.venv-vllm).

The main environment has no vllm; there these files are not collected at all (`.ci/run` runs them in
the vLLM environment instead), so the main suite stays light.
"""

from __future__ import annotations

import importlib.util
import json
import os
import uuid

import httpx
import pytest

if importlib.util.find_spec("vllm") is None:
    collect_ignore_glob = ["test_*.py"]

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def _worker(default_model_dir, backend: str):
    from counterpoint.server.config import Settings
    from counterpoint.server.worker.factory import build_worker_app

    from tests.conftest import ThreadServer
    settings = Settings(model=str(default_model_dir), served_model_name="SmolLM2", backend=backend,
                        max_model_len=1024, max_num_seqs=16,
                        max_num_batched_tokens=2048, kv_cache_gb=0.5)
    app = build_worker_app(settings)
    server = ThreadServer(app)
    server.app = app
    return server


@pytest.fixture(scope="session")
def vllm_worker(default_model_dir):
    with _worker(default_model_dir, "vllm") as server:
        yield server


@pytest.fixture(scope="session")
def torch_worker(default_model_dir):
    with _worker(default_model_dir, "torch") as server:
        yield server


def generate(url: str, body: dict) -> tuple[int, list[dict]]:
    """POST /generate; (status, NDJSON events) or (status, [error body])."""
    body = {"request_id": uuid.uuid4().hex, "model": "SmolLM2", **body}
    with httpx.Client(timeout=300) as client:
        r = client.post(f"{url}/generate", json=body)
        if r.status_code != 200:
            return r.status_code, [r.json()]
        return 200, [json.loads(line) for line in r.text.splitlines() if line.strip()]


def choices(events: list[dict]) -> dict[int, dict]:
    """Per choice index: its token ids, text, finish reason and logprobs."""
    out: dict[int, dict] = {}
    for e in events:
        assert e["type"] != "error", e
        if e["type"] == "delta":
            c = out.setdefault(e.get("index", 0), {"ids": [], "text": "", "finish": None, "logprobs": []})
            c["ids"] += e.get("token_ids", [])
            c["text"] += e.get("text", "")
            c["logprobs"] += e.get("logprobs") or []
            c["finish"] = e.get("finish_reason") or c["finish"]
    return out
