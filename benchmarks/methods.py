"""Per-token latency of every text method at batch 1 on the default model, relative to plain, in one run.

For each method one request generates --tokens tokens (ignore_eos) through the engine; the time per token
excludes the first step (prefill). Methods run in interleaved rounds and each keeps its best round. The amateur for `cd`/`lol` is the default model cut to its first
--amateur-layers layers (real weights, a genuinely smaller model), and its own plain cost is measured too.
Naive baselines run the way research code does: transformers `generate()` with a logits processor that runs
the contrast view's own forward (with its own cache) inside the processor, one sequential pass per token.
Prints a table and writes JSON (default benchmarks/results/methods.json).

    python benchmarks/methods.py [--tokens 48] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, LogitsProcessor, LogitsProcessorList

from counterpoint.decoders import REGISTRY, RequestContext
from counterpoint.server.worker import loader
from counterpoint.server.worker.torch.engine import Engine, EngineConfig
from counterpoint.server.worker.factory import model_info
from counterpoint.server.worker_protocol import SamplingParams

MESSAGES = [{"role": "user", "content": "I'm pretty sure it is Sydney. Tell me about the capital of Australia, "
                                        "a city with a long history."}]
METHODS = [("plain", {}, 1.0), ("cfg", {}, 1.5), ("lqcd", {}, 1.5),
           ("overshadow", {"conditions": ["a city with a long history"], "threshold": 10.0}, 1.5),
           ("contrastive_search", {}, 1.5), ("dola", {"layers": "high"}, 1.3), ("dola", {"layers": "low"}, 1.3),
           ("cd", {"amateur": "layer:12"}, 1.3), ("cd", {}, "amateur"), ("lol", {}, "amateur")]


def amateur_dir(model_dir: Path, layers: int) -> Path:
    target = loader.cache_dir() / "models" / f"{model_dir.name}-first{layers}"
    if not (target / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
        model.save_pretrained(target)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(target)
    return target


def add_request(engine: Engine, method: str, params: dict, tokens: int, rid: str = "bench") -> None:
    tok = engine.tokenizer
    render = lambda m: list(tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True)["input_ids"])
    tokenize = lambda x: tok(x)["input_ids"] if isinstance(x, str) else render(x)
    info = model_info(engine, "default", "amateur" if engine.amateur is not None else None)
    cls = REGISTRY[method]
    decoder = cls(cls.Params(**params), RequestContext(render(MESSAGES), info, messages=MESSAGES, tokenize=tokenize))
    engine.add(rid, 0, decoder, SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True))


def aggregate_tps(engine: Engine, method: str, params: dict, tokens: int, n: int = 8) -> float:
    """Tokens/s of n concurrent requests of one method (prefill included)."""
    for i in range(n):
        add_request(engine, method, params, tokens, f"bench{i}")
    t, produced = time.perf_counter(), 0
    while engine.has_work:
        produced += sum(len(o.token_ids) for o in engine.step())
    return produced / (time.perf_counter() - t)


def ms_per_token(engine: Engine, method: str, params: dict, tokens: int) -> float:
    add_request(engine, method, params, tokens)
    stamps = []
    while engine.has_work:
        if any(o.token_ids for o in engine.step()):
            stamps.append(time.perf_counter())
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1e3  # decode steps only: prefill excluded


class SecondPass(LogitsProcessor):
    """Research-code style: the contrast view's own forward inside the logits processor, every token."""

    def __init__(self, model, contrast_ids: list[int], combine):
        self.model, self.ids, self.combine = model, torch.tensor([contrast_ids]), combine
        self.cache, self.seen = DynamicCache(config=model.config), None

    def __call__(self, input_ids, scores):
        new = self.ids if self.seen is None else input_ids[:, -1:]
        self.seen = input_ids.shape[1]
        out = self.model(new, cache=self.cache, use_cache=True)
        return self.combine(scores, out.logits[:, -1].float())


def naive_ms_per_token(model, ids: list[int], processor, tokens: int) -> float:
    model.generation_config.eos_token_id = None
    run = lambda n, p: model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=0,
                                      logits_processor=LogitsProcessorList([p()]) if p else None)
    per_token = []
    for _ in range(2):  # best of two
        t = time.perf_counter()
        run(1, processor)
        first = time.perf_counter() - t
        t = time.perf_counter()
        run(tokens, processor)
        per_token.append((time.perf_counter() - t - first) / (tokens - 1) * 1e3)
    return min(per_token)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amateur-layers", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/methods.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = loader.resolve(loader.DEFAULT_MODEL)
    tok = AutoTokenizer.from_pretrained(model_dir)
    load = lambda p: AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)
    engine = Engine(load(model_dir), tok, EngineConfig(kv_cache_bytes=256 << 20),
                    amateur=load(amateur_dir(model_dir, args.amateur_layers)))
    amateur_only = Engine(load(amateur_dir(model_dir, args.amateur_layers)), tok, EngineConfig(kv_cache_bytes=64 << 20))
    ms_per_token(engine, "plain", {}, 8)  # warm-up
    best: dict[int, float] = {}
    amateur_ms = float("inf")
    for _ in range(args.rounds):  # interleaved rounds, best of each: a shared machine's noise only slows runs down
        for k, (method, params, _target) in enumerate(METHODS):
            best[k] = min(best.get(k, float("inf")), ms_per_token(engine, method, params, args.tokens))
        amateur_ms = min(amateur_ms, ms_per_token(amateur_only, "plain", {}, args.tokens))
    plain = best[0]
    amateur_plain = amateur_ms / plain
    rows = []
    for k, (method, params, target) in enumerate(METHODS):
        limit = 1.0 + amateur_plain + 0.15 if target == "amateur" else target
        rows.append({"method": method, "params": params, "ms_per_token": best[k], "x_plain": best[k] / plain,
                     "target_x": limit, "tps_8_concurrent": aggregate_tps(engine, method, params, args.tokens)})

    ref = load(model_dir)
    ids = list(tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)["input_ids"])
    neutral = list(tok.apply_chat_template([{"role": "user", "content": "Tell me about the capital of Australia, "
                                             "a city with a long history."}], add_generation_prompt=True,
                                           tokenize=True)["input_ids"])
    lp = lambda x: torch.log_softmax(x, -1)
    am = load(amateur_dir(model_dir, args.amateur_layers))
    naive = {
        "plain": naive_ms_per_token(ref, ids, None, args.tokens),
        "cfg": naive_ms_per_token(ref, ids, lambda: SecondPass(ref, ids[-1:], lambda s, n: lp(n) + 1.5 * (lp(s) - lp(n))),
                                  args.tokens),
        "lqcd": naive_ms_per_token(ref, neutral, lambda: SecondPass(ref, ids, lambda s, c: 2 * s - c), args.tokens),
        "cd": naive_ms_per_token(ref, ids, lambda: SecondPass(am, ids, lambda s, a: 1.5 * lp(s) - 0.5 * lp(a)),
                                 args.tokens),
    }
    for r in rows:
        key = r["method"] if not (r["method"] == "cd" and r["params"]) else None
        if key in naive:
            r["naive_ms_per_token"] = naive[key]
            r["speedup_vs_naive"] = naive[key] / r["ms_per_token"]
            r["speedup_vs_naive_8"] = r["tps_8_concurrent"] / (1e3 / naive[key])  # naive code runs one at a time

    print(f"default model, float32, batch 1, {args.tokens} tokens, {args.threads} threads; "
          f"amateur = first {args.amateur_layers} layers ({amateur_plain:.2f}x plain on its own)")
    print(f"{'method':<30} {'ms/token':>9} {'x plain':>8} {'target':>7} {'8 conc tok/s':>13} {'naive ms':>9} "
          f"{'speed-up b1':>12} {'speed-up 8':>11}")
    for r in rows:
        name = r["method"] + (f" {json.dumps(r['params'])}" if r["params"] else "")
        naive_ms = f"{r['naive_ms_per_token']:.1f}" if "naive_ms_per_token" in r else "-"
        speed = f"{r['speedup_vs_naive']:.2f}x" if "speedup_vs_naive" in r else "-"
        speed8 = f"{r['speedup_vs_naive_8']:.2f}x" if "speedup_vs_naive_8" in r else "-"
        print(f"{name[:30]:<30} {r['ms_per_token']:>9.1f} {r['x_plain']:>7.2f}x {r['target_x']:>6.2f}x "
              f"{r['tps_8_concurrent']:>13.1f} {naive_ms:>9} {speed:>12} {speed8:>11}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"tokens": args.tokens, "threads": args.threads,
                                          "amateur_plain_x": amateur_plain, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
