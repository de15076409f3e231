"""lm-evaluation-harness's `local-completions` model against our /v1/completions, for loglikelihood.

The payload below is the shape lm-eval's `LocalCompletionsAPI._create_payload(generate=False)` sends (prompt
as token-id lists, or as strings with `tokenized_requests=False`; echo, logprobs 1, max_tokens 1, seed), and
`_lm_eval_parse` reads the response the way its `parse_logprobs` does: per choice in index order, the sum of
`token_logprobs[ctxlen:-1]` (the last entry is the one generated token), and "greedy" when each of those
tokens' log-prob equals the largest in its `top_logprobs`. lm-eval itself is not installed for the tests.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from counterpoint.clients.eval.scoring import continuation_logprob

CONTEXT = "Question: Which planet is known as the red planet?\nAnswer:"


def _lm_eval_payload(prompt, **extra) -> dict:
    return {"model": "tiny", "prompt": prompt, "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": 1234,
            "echo": True, **extra}


def _lm_eval_parse(response: dict, ctxlens: list[int]) -> list[tuple[float, bool]]:
    out = []
    for choice, ctxlen in zip(sorted(response["choices"], key=lambda c: c["index"]), ctxlens):
        assert ctxlen > 0
        lps = choice["logprobs"]["token_logprobs"][ctxlen:-1]
        tops = choice["logprobs"]["top_logprobs"][ctxlen:-1]
        out.append((sum(lps), all(lp == max(top.values()) for lp, top in zip(lps, tops))))
    return out


@pytest.fixture(scope="module")
def reference(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()

    def logprob(ctx: list[int], cont: list[int]) -> float:
        ids = ctx + cont
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)  # [T, V]
        return sum(lp[i - 1, ids[i]].item() for i in range(len(ctx), len(ids)))
    return logprob


@pytest.fixture(scope="module")
def pairs(tiny_gateway, tokenizer):
    """(context ids, continuation ids): the model's own greedy next token, and two ordinary continuations."""
    import httpx
    ctx = tokenizer(CONTEXT, add_special_tokens=False).input_ids
    r = httpx.post(f"{tiny_gateway.url}/v1/completions", timeout=60,
                   json={"model": "tiny", "prompt": ctx, "max_tokens": 1, "temperature": 0, "logprobs": 1})
    greedy = tokenizer(r.json()["choices"][0]["text"], add_special_tokens=False).input_ids
    conts = [greedy] + [tokenizer(c, add_special_tokens=False).input_ids for c in (" Mars", " Jupiter is")]
    return ctx, conts


def test_tokenized_batch_parses_like_lm_eval(gateway_client, pairs, reference):
    ctx, conts = pairs
    r = gateway_client.post("/v1/completions", json=_lm_eval_payload([ctx + c for c in conts]))
    assert r.status_code == 200, r.text
    parsed = _lm_eval_parse(r.json(), [len(ctx)] * len(conts))
    for (ll, _), cont in zip(parsed, conts):
        assert ll == pytest.approx(reference(ctx, cont), abs=1e-3)
    assert parsed[0][1] is True  # the model's own greedy token
    assert parsed[1][1] is False or parsed[2][1] is False


def test_string_prompt_and_decoding_field(gateway_client, tokenizer, pairs, reference):
    """tokenized_requests=False sends the decoded string; a `decoding` field added to the payload is honoured."""
    ctx, conts = pairs
    text = tokenizer.decode(ctx + conts[1])
    r = gateway_client.post("/v1/completions", json=_lm_eval_payload(text, decoding={"method": "plain"}))
    assert r.status_code == 200, r.text
    assert r.json()["decoding"]["method"] == "plain"
    ((ll, _),) = _lm_eval_parse(r.json(), [len(ctx)])
    assert ll == pytest.approx(reference(ctx, conts[1]), abs=1e-3)


def test_lm_eval_and_counterpoint_eval_agree(gateway_client, tokenizer, pairs):
    """The loglikelihood lm-eval reads equals the one `counterpoint eval` reads from max_tokens 0 scoring."""
    ctx, conts = pairs
    lm_eval = _lm_eval_parse(gateway_client.post("/v1/completions", json=_lm_eval_payload([ctx + conts[1]])).json(),
                             [len(ctx)])[0][0]
    choice = tokenizer.decode(conts[1])
    r = gateway_client.post("/v1/completions", json={"model": "tiny", "prompt": [CONTEXT + choice], "echo": True,
                                                     "logprobs": 1, "max_tokens": 0, "temperature": 0})
    ours = continuation_logprob(r.json()["choices"][0], CONTEXT + choice, len(CONTEXT))
    assert ours == pytest.approx(lm_eval, abs=1e-4)
