"""One request cannot break another's on the worker: a request that breaks the engine's step fails alone,
and an expensive request (a huge prompt, n choices, many views) is paid for by itself, off the event loop.

Each attack runs beside a "victim" stream that must complete with exactly the tokens it gets alone.
"""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import pytest

from tests.conftest import ThreadServer

from .engine_hooks import FAIL_IDS
from .helpers import wait_kv_free

POISON = [1000, 1001, 1002]  # a prompt holding these ids breaks every forward it is in (engine_hooks.fail_on_marker)
VICTIM = {"request_id": "victim", "model": "tiny", "prompt": "The victim's story begins",
          "sampling": {"max_tokens": 40, "ignore_eos": True, "temperature": 0}}


@pytest.fixture(scope="module")
def worker(tiny_llama_dir):
    from counterpoint.server.config import Settings
    from counterpoint.server.worker.factory import build_worker_app
    mp = pytest.MonkeyPatch()
    mp.setenv("COUNTERPOINT_ENGINE_HOOK", "tests.reliability.engine_hooks:fail_on_marker")
    mp.setenv(FAIL_IDS, ",".join(map(str, POISON)))
    app = build_worker_app(Settings(model=str(tiny_llama_dir), served_model_name="tiny", kv_cache_gb=0.05,
                                    max_model_len=512))
    mp.undo()
    with ThreadServer(app) as server:
        server.app = app
        yield server


def _generate(url: str, body: dict, rid: str) -> list[dict]:
    r = httpx.post(f"{url}/generate", json={**body, "request_id": rid}, timeout=120)
    if r.status_code != 200:
        return [{"type": "refused", "status": r.status_code, **r.json()}]
    return [json.loads(line) for line in r.text.splitlines() if line]


def _tokens(events: list[dict]) -> list[int]:
    assert events[-1]["type"] == "done", events[-1]
    return [t for e in events if e["type"] == "delta" for t in e.get("token_ids", [])]


def test_a_request_that_breaks_the_step_fails_alone(worker):
    alone = _tokens(_generate(worker.url, VICTIM, "alone"))
    attack = {"model": "tiny", "prompt": POISON * 3, "sampling": {"max_tokens": 20, "ignore_eos": True}}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        victims = [pool.submit(_generate, worker.url, VICTIM, f"victim{i}") for i in range(2)]
        time.sleep(0.2)  # the victims are decoding when the attack joins their batch
        attacks = [pool.submit(_generate, worker.url, attack, f"attack{i}") for i in range(2)]
        for a in attacks:
            last = a.result()[-1]
            assert last["type"] == "error" and "could not run this request" in last["message"]
            assert "secret" not in json.dumps(last)
        for v in victims:
            assert _tokens(v.result()) == alone
    wait_kv_free(worker.app.state.worker.core)
    assert _tokens(_generate(worker.url, VICTIM, "after")) == alone


def test_a_huge_request_is_refused_without_stalling_the_worker(worker):
    """1 MB of text, n 4, overshadow with 4 conditions: tokenized once, off the event loop, then refused for
    its length; /health answers throughout and a victim stream completes unchanged."""
    alone = _tokens(_generate(worker.url, VICTIM, "alone2"))
    conditions = ["in the north", "with a river", "before the war", "for the king"]
    text = "A town " + " ".join(conditions) + ". " + "word " * 200_000
    attack = {"model": "tiny", "messages": [{"role": "user", "content": text}],
              "sampling": {"max_tokens": 4, "n": 4}, "decoding": {"method": "overshadow", "params":
                                                                   {"conditions": conditions}}}
    health_ok, stop = [], False

    def poll_health() -> None:
        while not stop:
            health_ok.append(httpx.get(f"{worker.url}/health", timeout=2.0).status_code == 200)  # the gateway's
            time.sleep(0.05)  # health-check timeout: a slower answer would take the worker out of rotation

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        poller = pool.submit(poll_health)
        victim = pool.submit(_generate, worker.url, VICTIM, "victim-big")
        refused = pool.submit(_generate, worker.url, attack, "huge").result()
        assert _tokens(victim.result()) == alone
        stop = True
        poller.result()
    assert refused[0]["type"] == "refused" and refused[0]["status"] == 400
    assert "maximum context length" in refused[0]["error"]["message"]
    assert health_ok and all(health_ok)
