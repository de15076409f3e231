"""Every text method through the engine equals a step-by-step reference of its formula (methods.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from .reference import NEG, apc, greedy_loop, last_logits, load, make_engine, run_method

PROMPT = "The history of the old city begins"
CHAT = [{"role": "user", "content": "I'm pretty sure the answer is 5. What is two plus two, right?"}]


@pytest.fixture(scope="module")
def deep(tiny_deep_dir):
    return load(tiny_deep_dir)


@pytest.fixture(scope="module")
def engine(tiny_deep_dir, tiny_amateur_dir):
    return make_engine(tiny_deep_dir, tiny_amateur_dir)


def test_plain(engine, deep, tokenizer):
    got, _ = run_method(engine, "plain", {}, PROMPT)
    ref = greedy_loop({"o": tokenizer(PROMPT)["input_ids"]}, lambda v: last_logits(deep, v["o"]), 12)
    assert got == ref


def test_cd_with_amateur_model(engine, deep, tiny_amateur_dir, tokenizer):
    amateur = load(tiny_amateur_dir)

    def score(v):
        e, a = last_logits(deep, v["e"]), last_logits(amateur, v["a"])
        fused = 1.5 * torch.log_softmax(e, -1) - 0.5 * torch.log_softmax(a / 0.8, -1)
        return fused.masked_fill(~apc(e, 0.1), NEG)

    ids = tokenizer(PROMPT)["input_ids"]
    got, report = run_method(engine, "cd", {"amateur_temperature": 0.8}, PROMPT)
    assert got == greedy_loop({"e": list(ids), "a": list(ids)}, score, 12)
    assert report["amateur"] == "amateur"
    assert got != run_method(engine, "plain", {}, PROMPT)[0]  # the contrast does change the output


def test_cd_with_own_layer(engine, deep, tokenizer):
    def score(v):
        e, hs = last_logits(deep, v["e"], hidden=True)
        a = deep.lm_head(deep.model.norm(hs[3][0, -1])).float()
        fused = 1.5 * torch.log_softmax(e, -1) - 0.5 * torch.log_softmax(a, -1)
        return fused.masked_fill(~apc(e, 0.1), NEG)

    got, _ = run_method(engine, "cd", {"amateur": "layer:3"}, PROMPT)
    assert got == greedy_loop({"e": tokenizer(PROMPT)["input_ids"]}, score, 12)


def dola_reference(final: torch.Tensor, candidates: dict[int, torch.Tensor], alpha: float = 0.1) -> torch.Tensor:
    """transformers 4.x `_dola_select_contrast` + `_relative_top_filter` at batch 1, restated."""
    layers = list(candidates)
    if len(layers) == 1:
        base = candidates[layers[0]]
    else:
        stacked = torch.stack([candidates[j] for j in layers])[:, None]  # [C, 1, V]
        m = 0.5 * (F.softmax(final[None], -1)[None] + F.softmax(stacked, -1))
        kl1 = F.kl_div(F.log_softmax(final[None], -1)[None], m, reduction="none").mean(-1)
        kl2 = F.kl_div(F.log_softmax(stacked, -1), m, reduction="none").mean(-1)
        base = candidates[layers[int((0.5 * (kl1 + kl2)).mean(-1).argmax())]]
    f, b = final.log_softmax(-1), base.log_softmax(-1)
    thresh = torch.min(f.sort(descending=True).values[0], f.max() + torch.log(torch.tensor(alpha)))
    b = b.masked_fill(f < thresh, -1e-3)
    f = f.masked_fill(f < thresh, NEG)
    return f - b


@pytest.mark.parametrize("layers, expected", [("high", [3, 5]), ("low", [0, 2]), ([1], [1]), ([2, 4, 9], [2, 4])])
def test_dola(engine, deep, tokenizer, layers, expected):
    def score(v):
        final, hs = last_logits(deep, v["o"], hidden=True)
        cands = {j: deep.lm_head(hs[j][0, -1]).float() for j in expected}
        return dola_reference(final, cands)

    got, report = run_method(engine, "dola", {"layers": layers}, PROMPT)
    assert report["candidate_layers"] == expected
    assert got == greedy_loop({"o": tokenizer(PROMPT)["input_ids"]}, score, 12)


def test_dola_with_repetition_penalty(engine, deep, tokenizer):
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor
    penalty = RepetitionPenaltyLogitsProcessor(1.2)

    def score(v):
        final, hs = last_logits(deep, v["o"], hidden=True)
        fused = dola_reference(final, {j: deep.lm_head(hs[j][0, -1]).float() for j in (3, 5)})
        return penalty(torch.tensor([v["o"]]), fused[None])[0]

    got, _ = run_method(engine, "dola", {"layers": "high"}, PROMPT, repetition_penalty=1.2)
    assert got == greedy_loop({"o": tokenizer(PROMPT)["input_ids"]}, score, 12)


def lol_score(deep, amateur):
    """LoL with the defaults: expert 6 layers, amateur 2: j = 3 -> j' = round(3 * 2 / 6) = 1."""
    def score(v):
        e, hs_e = last_logits(deep, v["e"], hidden=True)
        a, hs_a = last_logits(amateur, v["a"], hidden=True)
        el = deep.lm_head(deep.model.norm(hs_e[3][0, -1])).float()
        al = amateur.lm_head(amateur.model.norm(hs_a[1][0, -1])).float()
        lp = torch.log_softmax
        fused = (lp(e, -1) - lp(a, -1)) + 0.5 * (lp(el, -1) - lp(al, -1))
        return fused.masked_fill(~apc(e, 0.1), NEG)
    return score


def test_lol(engine, deep, tiny_amateur_dir, tokenizer):
    ids = tokenizer(PROMPT)["input_ids"]
    got, report = run_method(engine, "lol", {}, PROMPT)
    assert report["lower_layer"] == 3 and report["amateur_lower_layer"] == 1
    assert got == greedy_loop({"e": list(ids), "a": list(ids)}, lol_score(deep, load(tiny_amateur_dir)), 12)


def test_lol_refocus_goes_to_the_expert_only(engine, deep, tiny_amateur_dir, tokenizer):
    messages = [{"role": "user", "content": "Who wrote Hamlet?"}]
    refocus = "Answer truthfully."
    render = lambda m: list(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True)["input_ids"])
    got, _ = run_method(engine, "lol", {"refocus": refocus}, messages=messages)
    views = {"e": render([{"role": "system", "content": refocus}, *messages]), "a": render(messages)}
    assert got == greedy_loop(views, lol_score(deep, load(tiny_amateur_dir)), 12)


@pytest.mark.parametrize("params", [{}, {"negative_prompt": "A boring list"}, {"guidance_scale": 3.0}])
def test_cfg_matches_transformers_4_processor(engine, deep, tokenizer, params):
    scale = params.get("guidance_scale", 1.5)
    ids = tokenizer(PROMPT)["input_ids"]
    negative = tokenizer(params["negative_prompt"])["input_ids"] if "negative_prompt" in params else ids[-1:]

    def score(v):  # UnbatchedClassifierFreeGuidanceLogitsProcessor with negative_prompt_ids
        cond = torch.log_softmax(last_logits(deep, v["c"]), -1)
        uncond = torch.log_softmax(last_logits(deep, v["n"]), -1)
        return scale * (cond - uncond) + uncond

    got, _ = run_method(engine, "cfg", params, PROMPT)
    assert got == greedy_loop({"c": list(ids), "n": list(negative)}, score, 12)


def test_cfg_negative_messages(engine, deep, tokenizer):
    render = lambda m: list(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True)["input_ids"])
    negative = [{"role": "user", "content": "Say something false."}]

    def score(v):
        cond, uncond = (torch.log_softmax(last_logits(deep, v[k]), -1) for k in ("c", "n"))
        return 1.5 * (cond - uncond) + uncond

    got, _ = run_method(engine, "cfg", {"negative_messages": negative}, messages=CHAT)
    assert got == greedy_loop({"c": render(CHAT), "n": render(negative)}, score, 12)


def test_lqcd_automatic_rewrite(engine, deep, tokenizer):
    render = lambda m: list(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True)["input_ids"])
    neutral = [{"role": "user", "content": "What is two plus two?"}]

    def score(v):
        n, lead = last_logits(deep, v["n"]), last_logits(deep, v["l"])
        return (2 * n - lead).masked_fill(~apc(n, 0.1), NEG)

    got, report = run_method(engine, "lqcd", {}, messages=CHAT)
    assert report["neutral_query"] == "What is two plus two?" and report["rewrite"] == "automatic"
    assert got == greedy_loop({"n": render(neutral), "l": render(CHAT)}, score, 12)


def test_lqcd_given_neutral_query_on_completions(engine, deep, tokenizer):
    leading, neutral = "I think it is Sydney. The capital of Australia is", "The capital of Australia is"

    def score(v):
        n, lead = last_logits(deep, v["n"]), last_logits(deep, v["l"])
        return (1.5 * n - 0.5 * lead).masked_fill(~apc(n, 0.2), NEG)

    got, report = run_method(engine, "lqcd", {"neutral_query": neutral, "alpha": 0.5, "beta": 0.2}, leading)
    assert report["rewrite"] == "client"
    views = {"n": tokenizer(neutral)["input_ids"], "l": tokenizer(leading)["input_ids"]}
    assert got == greedy_loop(views, score, 12)


def test_overshadow(engine, deep, tokenizer):
    text = "Name a famous singer from Canada who plays the violin."
    conditions = ["from Canada", "who plays the violin"]
    removed = ["Name a famous singer who plays the violin.", "Name a famous singer from Canada."]
    ids = [tokenizer(t)["input_ids"] for t in (text, *removed)]
    lps = [torch.log_softmax(last_logits(deep, i), -1) for i in ids]
    kl = [float((lps[0].exp() * (lps[0] - lp)).sum()) for lp in lps[1:]]
    c = min(range(2), key=lambda k: kl[k])
    threshold = kl[c] + 1.0  # make sure it is flagged, then check the contrast

    def score(v):
        o, w = last_logits(deep, v["o"]), last_logits(deep, v["w"])
        return (2 * o - w).masked_fill(~apc(o, 0.1), NEG)

    got, report = run_method(engine, "overshadow", {"conditions": conditions, "threshold": threshold}, text)
    assert report["flagged"] and report["condition"] == conditions[c]
    assert report["divergence"] == pytest.approx(kl[c], rel=1e-4, abs=1e-6)
    assert got == greedy_loop({"o": list(ids[0]), "w": list(ids[1 + c])}, score, 12)
    plain, _ = run_method(engine, "plain", {}, text)
    got, report = run_method(engine, "overshadow", {"conditions": conditions, "threshold": 0.0}, text)
    assert not report["flagged"] and got == plain  # not overshadowed: decodes plainly
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


@pytest.fixture(scope="module")
def moe_engine(tiny_moe_dir):
    return make_engine(tiny_moe_dir)


def test_scmoe(moe_engine, tiny_moe_dir, tokenizer):
    model = load(tiny_moe_dir)
    routers = [m for m in model.modules() if type(m).__name__.endswith("TopKRouter")]
    weak = {"on": False}

    def force_rank(module, args, output):  # the weak view, restated: one expert, rank 1, weight 1
        if not weak["on"]:
            return output
        logits, weights, indices = output
        second = logits.softmax(-1).argsort(-1, descending=True)[:, 1:2]
        return logits, torch.cat([torch.ones_like(weights[:, :1]), torch.zeros_like(weights[:, 1:])], 1), \
            torch.cat([second, indices[:, 1:]], 1)

    for r in routers:
        r.register_forward_hook(force_rank)

    def score(v):
        weak["on"] = False
        s = last_logits(model, v["o"])
        weak["on"] = True
        w = last_logits(model, v["o"])
        weak["on"] = False
        fused = (1.5 * s - 0.5 * w).masked_fill(~apc(s, 0.1), NEG)
        fused[tokenizer.eos_token_id] = (1.5 * s - 0.5 * w)[tokenizer.eos_token_id]
        return fused

    ids = tokenizer(PROMPT)["input_ids"]
    weak["on"] = True
    weak_logits = last_logits(model, ids)
    weak["on"] = False
    assert not torch.allclose(weak_logits, last_logits(model, ids))  # the weak view really differs
    got, _ = run_method(moe_engine, "scmoe", {}, PROMPT)
    assert got == greedy_loop({"o": list(ids)}, score, 12)
    assert got != run_method(moe_engine, "plain", {}, PROMPT)[0]


def test_mixed_methods_in_one_batch_equal_each_alone(engine, tokenizer):
    from counterpoint.decoders import REGISTRY, RequestContext
    from counterpoint.server.worker.factory import model_info
    from counterpoint.server.worker_protocol import SamplingParams
    cases = [("plain", {}), ("cd", {}), ("cd", {"amateur": "layer:2"}), ("dola", {}), ("dola", {"layers": [1]}),
             ("cfg", {}), ("lqcd", {"neutral_query": "The city"}), ("lol", {}),
             ("overshadow", {"conditions": ["old city"], "threshold": 100.0})]
    alone = [run_method(engine, m, p, PROMPT)[0] for m, p in cases]
    info = model_info(engine, "tiny", "amateur")
    tokenize = lambda x: tokenizer(x)["input_ids"]
    ids = tokenize(PROMPT)
    for i, (m, p) in enumerate(cases):
        cls = REGISTRY[m]
        decoder = cls(cls.Params(**p), RequestContext(ids, info, prompt=PROMPT, tokenize=tokenize))
        engine.add(f"mix{i}", 0, decoder, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))
    got = {f"mix{i}": [] for i in range(len(cases))}
    while engine.has_work:
        for out in engine.step():
            got[out.group_id] += out.token_ids
    assert [got[f"mix{i}"] for i in range(len(cases))] == alone
    for pool in engine.pools.managers.values():
        assert pool.num_free_blocks == pool.num_blocks


def contrastive_reference(model, ids: list[int], k: int, alpha: float, steps: int) -> list[int]:
    """transformers 4.x `_contrastive_search` at batch 1, restated without a cache."""
    ids = list(ids)
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
        context, logits = out.hidden_states[-1][0], out.logits[0, -1]
        result = []
        for _ in range(steps):
            top_p, top_i = torch.softmax(logits, -1).topk(k)
            cand = [model(torch.tensor([ids + [int(t)]]), output_hidden_states=True) for t in top_i]
            hidden = torch.stack([c.hidden_states[-1][0, -1] for c in cand])  # [k, H]
            cos = (hidden / hidden.norm(dim=-1, keepdim=True)) @ (context / context.norm(dim=-1, keepdim=True)).T
            best = int(((1 - alpha) * top_p - alpha * cos.max(-1).values).argmax())
            ids.append(int(top_i[best]))
            result.append(ids[-1])
            context = torch.cat([context, hidden[best][None]])
            logits = cand[best].logits[0, -1]
    return result


@pytest.mark.parametrize("params", [{}, {"top_k": 3, "penalty_alpha": 0.3}])
def test_contrastive_search(engine, deep, tokenizer, params):
    got, _ = run_method(engine, "contrastive_search", params, PROMPT)
    k, alpha = params.get("top_k", 4), params.get("penalty_alpha", 0.6)
    assert got == contrastive_reference(deep, tokenizer(PROMPT)["input_ids"], k, alpha, 12)
    for pool in engine.pools.managers.values():
        assert pool.num_free_blocks == pool.num_blocks


def test_contrastive_search_beside_other_requests(engine, tokenizer):
    from counterpoint.decoders import REGISTRY, RequestContext
    from counterpoint.server.worker.factory import model_info
    from counterpoint.server.worker_protocol import SamplingParams
    alone = [run_method(engine, m, {}, p)[0] for m, p in (("contrastive_search", PROMPT), ("plain", "Hi"),
                                                          ("contrastive_search", "Another prompt"))]
    info = model_info(engine, "tiny", "amateur")
    tokenize = lambda x: tokenizer(x)["input_ids"]
    for i, (m, p) in enumerate((("contrastive_search", PROMPT), ("plain", "Hi"), ("contrastive_search", "Another prompt"))):
        cls = REGISTRY[m]
        engine.add(f"cs{i}", 0, cls(cls.Params(), RequestContext(tokenize(p), info, prompt=p, tokenize=tokenize)),
                   SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))
    got = {f"cs{i}": [] for i in range(3)}
    while engine.has_work:
        for out in engine.step():
            got[out.group_id] += out.token_ids
    assert [got[f"cs{i}"] for i in range(3)] == alone
