"""The vLLM backend against the PyTorch backend on the embedded SmolLM2 in float32, through /generate."""

from __future__ import annotations

import uuid

import pytest

from .conftest import choices, generate

PROMPTS = ["The capital of France is", "Once upon a time, in a small village,", "def fibonacci(n):"]
CHAT = [{"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_plain_greedy_equals_torch_backend(vllm_worker, torch_worker, prompt):
    body = {"prompt": prompt, "sampling": {"temperature": 0, "max_tokens": 24, "logprobs": 2}}
    ours, theirs = (choices(generate(w.url, body)[1])[0] for w in (torch_worker, vllm_worker))
    assert theirs["ids"] == ours["ids"] and theirs["text"] == ours["text"]
    assert theirs["finish"] == ours["finish"] == "length"
    for a, b in zip(ours["logprobs"], theirs["logprobs"]):
        assert a["token_id"] == b["token_id"] and a["logprob"] == pytest.approx(b["logprob"], abs=1e-3)
        assert [t["token_id"] for t in a["top"]] == [t["token_id"] for t in b["top"]]


@pytest.mark.parametrize("decoding", [
    {"method": "cfg", "params": {"guidance_scale": 1.5, "negative_prompt": "Answer rudely."}},
    {"method": "cfg", "params": {"guidance_scale": 3.0}},
    {"method": "lqcd", "params": {"alpha": 1.0, "beta": 0.1}},
    {"method": "overshadow", "params": {"threshold": 100.0, "conditions": ["in a small village", "Once upon a time"]}},
    {"method": "overshadow", "params": {"threshold": 0.0, "conditions": ["in a small village"]}},
])
def test_paired_greedy_equals_torch_backend(vllm_worker, torch_worker, decoding):
    body = {"messages": CHAT if decoding["method"] == "lqcd" else None,
            "prompt": None if decoding["method"] == "lqcd" else PROMPTS[1],
            "sampling": {"temperature": 0, "max_tokens": 20, "logprobs": 1}, "decoding": decoding}
    if decoding["method"] == "lqcd":
        body["messages"] = [{"role": "user", "content": "I think the answer is blue. What colour is the sky?"}]
    ours, theirs = (choices(generate(w.url, body)[1])[0] for w in (torch_worker, vllm_worker))
    assert theirs["ids"] == ours["ids"] and theirs["text"] == ours["text"]
    assert theirs["finish"] == ours["finish"]
    for a, b in zip(ours["logprobs"], theirs["logprobs"]):  # the method's fused distribution
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-3)


def test_cfg_changes_the_output_and_plain_rows_beside_it_are_untouched(vllm_worker):
    plain = {"prompt": PROMPTS[0], "sampling": {"temperature": 0, "max_tokens": 16}}
    cfg = {**plain, "decoding": {"method": "cfg", "params": {"guidance_scale": 4.0, "negative_prompt": "Paris"}}}
    alone = choices(generate(vllm_worker.url, plain)[1])[0]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:  # plain and cfg groups share vLLM's batch
        results = list(pool.map(lambda b: choices(generate(vllm_worker.url, b)[1])[0], [plain, cfg, plain, cfg]))
    assert results[0]["ids"] == results[2]["ids"] == alone["ids"]
    assert results[1]["ids"] == results[3]["ids"] != alone["ids"]


def test_stop_strings_n_seed_usage_and_finish_reasons(vllm_worker):
    body = {"prompt": PROMPTS[1], "sampling": {"temperature": 0.8, "seed": 7, "n": 2, "max_tokens": 12}}
    status, events = generate(vllm_worker.url, body)
    again = choices(generate(vllm_worker.url, body)[1])
    got = choices(events)
    assert status == 200 and got == again and set(got) == {0, 1}  # seeded: reproducible, choice i uses seed + i
    done = events[-1]
    assert done["type"] == "done" and done["completion_tokens"] == sum(len(c["ids"]) for c in got.values())
    assert events[0]["type"] == "start" and events[0]["prompt_tokens"] == len(events[0]["token_ids"])
    greedy = choices(generate(vllm_worker.url, {"prompt": PROMPTS[0], "sampling": {"temperature": 0,
                                                                                   "max_tokens": 16}})[1])[0]
    word = greedy["text"].split()[2]
    stopped = choices(generate(vllm_worker.url, {"prompt": PROMPTS[0], "sampling": {
        "temperature": 0, "max_tokens": 16, "stop": [word]}})[1])[0]
    assert stopped["finish"] == "stop" and word not in stopped["text"]
    assert greedy["text"].startswith(stopped["text"])


def test_unsupported_methods_answer_400_naming_the_torch_backend(vllm_worker):
    for decoding in ({"method": "dola"}, {"method": "cd", "params": {"amateur": "layer:4"}},
                     {"method": "contrastive_search"}):
        status, body = generate(vllm_worker.url, {"prompt": "Hi", "decoding": decoding})
        assert status == 400 and "--backend torch" in body[0]["error"]["message"]


def test_info_lists_the_methods_this_backend_runs(vllm_worker, torch_worker):
    import httpx
    info = httpx.get(f"{vllm_worker.url}/info").json()["models"][0]
    assert info["backend"] == "vllm" and set(info["methods"]) == {"plain", "cfg", "lqcd", "overshadow"}
    assert "dola" in httpx.get(f"{torch_worker.url}/info").json()["models"][0]["methods"]
    assert httpx.get(f"{vllm_worker.url}/health").json()["status"] == "ok"
    assert "counterpoint_worker_preemptions" in httpx.get(f"{vllm_worker.url}/metrics").text


@pytest.fixture(scope="module")
def vllm_backend(default_model_dir):
    """The vLLM backend in this process (no worker), to drive step by step and disturb between steps."""
    from counterpoint.server.config import Settings
    from counterpoint.server.worker.vllm.build import build_vllm
    engine, info = build_vllm(Settings(model=str(default_model_dir), backend="vllm", max_model_len=1024,
                                       max_num_seqs=16, max_num_batched_tokens=2048, kv_cache_gb=0.5), "SmolLM2")
    return engine, info


def _run_with_disturbance(backend, body: dict, after: int, disturb) -> list:
    """Run one request on the backend; after `after` outputs with tokens, call `disturb(engine)` between steps.
    Returns the outputs (StepOutput or GroupFailure) in order."""
    from counterpoint.server.worker.backend import EngineRequest, resolve_views
    from counterpoint.server.worker.inputs import make_decoder, prompt_ids
    from counterpoint.server.worker_protocol import GenerateRequest
    from transformers import AutoTokenizer
    engine, info = backend
    req = GenerateRequest(request_id=uuid.uuid4().hex, model="SmolLM2", **body)
    tokenizer = AutoTokenizer.from_pretrained(engine.llm.model_config.tokenizer)
    decoder = make_decoder(req, prompt_ids(req, tokenizer, info), tokenizer, info)
    engine.submit(EngineRequest(f"{req.request_id}-0", 0, decoder.detached(), resolve_views(decoder), req.sampling))
    outputs, seen = [], 0
    if after == 0:
        disturb(engine)
    while engine.has_work:
        for out in engine.step():
            outputs.append(out)
            seen += bool(getattr(out, "token_ids", None))
            if seen == after and getattr(out, "token_ids", None):
                disturb(engine)
    return outputs


def _drop_negative_view(engine) -> None:
    """What a preemption does to vLLM's batch: one view of the group leaves while the other goes on."""
    from counterpoint.server.worker.vllm.backend import _Paired
    for group in engine.groups.values():
        if isinstance(group, _Paired) and "negative" in group.requests:
            engine.llm.abort_request([group.requests["negative"]])


@pytest.mark.parametrize("after", [1, 5])
def test_cfg_output_stays_exact_when_vllm_splits_a_group(vllm_backend, torch_worker, after):
    body = {"prompt": PROMPTS[2], "sampling": {"temperature": 0, "max_tokens": 16},
            "decoding": {"method": "cfg", "params": {"guidance_scale": 2.0, "negative_prompt": "Hello"}}}
    expected = choices(generate(torch_worker.url, body)[1])[0]
    engine = vllm_backend[0]
    restarts = engine.num_restarts
    outs = _run_with_disturbance(vllm_backend, body, after, _drop_negative_view)
    assert engine.num_restarts > restarts  # the split was seen and the group resubmitted from its tokens
    assert [t for o in outs for t in o.token_ids] == expected["ids"]
    assert "".join(o.text for o in outs) == expected["text"]


def test_a_group_split_too_often_fails_cleanly(vllm_backend, monkeypatch):
    from counterpoint.server.worker.backend import GroupFailure
    from counterpoint.server.worker.vllm import backend as vllm_backend_module
    body = {"prompt": PROMPTS[0], "sampling": {"temperature": 0, "max_tokens": 12},
            "decoding": {"method": "cfg", "params": {"negative_prompt": "Hello"}}}
    expected = [t for o in _run_with_disturbance(vllm_backend, body, -1, None) for t in o.token_ids]
    monkeypatch.setattr(vllm_backend_module, "MAX_RESTARTS", 0)
    outs = _run_with_disturbance(vllm_backend, body, 3, _drop_negative_view)
    assert isinstance(outs[-1], GroupFailure) and "different steps" in outs[-1].message
    sent = [t for o in outs[:-1] for t in o.token_ids]
    assert 3 <= len(sent) < len(expected) and sent == expected[:len(sent)]  # nothing off-method was sent
    assert not vllm_backend[0].groups and not vllm_backend[0].llm.has_unfinished_requests()  # its views are gone
    monkeypatch.setattr(vllm_backend_module, "MAX_RESTARTS", 3)
    assert [t for o in _run_with_disturbance(vllm_backend, body, -1, None) for t in o.token_ids] == expected


def test_prompt_scoring_equals_torch_backend(vllm_worker, torch_worker):
    body = {"prompt": PROMPTS[0], "echo": True, "sampling": {"max_tokens": 0, "prompt_logprobs": 1}}
    (_, ours), (_, theirs) = (generate(w.url, body) for w in (torch_worker, vllm_worker))
    a, b = ours[0]["prompt_logprobs"], theirs[0]["prompt_logprobs"]
    assert [x["token_id"] for x in a] == [x["token_id"] for x in b] and b[0]["logprob"] is None
    assert [x["logprob"] for x in b[1:]] == pytest.approx([x["logprob"] for x in a[1:]], abs=1e-3)
    assert choices(theirs)[0]["ids"] == [] and choices(theirs)[0]["finish"] == "length"
    assert theirs[-1]["type"] == "done" and theirs[-1].get("completion_tokens", 0) == 0


def test_seeded_cfg_sampling_and_diagnostics_equal_torch_backend(vllm_worker, torch_worker):
    body = {"prompt": PROMPTS[1], "sampling": {"temperature": 0.9, "top_p": 0.95, "seed": 11, "n": 2, "max_tokens": 16},
            "decoding": {"method": "cfg", "params": {"guidance_scale": 2.0}, "diagnostics": True}}
    (_, ours), (_, theirs) = (generate(w.url, body) for w in (torch_worker, vllm_worker))
    a, b = choices(ours), choices(theirs)
    assert [b[i]["ids"] for i in (0, 1)] == [a[i]["ids"] for i in (0, 1)]  # the same sampler and seeds
    assert b[0]["ids"] != b[1]["ids"]  # choice i uses seed + i
    diag = [e for e in theirs if e["type"] == "delta" and e.get("token_ids")]
    assert all(len(e["changed"]) == 1 and e["divergence"][0] >= 0 for e in diag)
    for key in ("changed", "own_token_ids"):  # the original view's own choice, as the torch engine reports it
        assert [e[key] for e in diag if e.get("index", 0) == 0] == \
            [e[key] for e in ours if e["type"] == "delta" and e.get("token_ids") and e.get("index", 0) == 0]
