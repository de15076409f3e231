"""Where one engine step's time goes at 8 and 32 concurrent streams, and the per-token cost of framing.

Runs the torch engine in-process on the default model (greedy, plain, `--tokens` per stream, ignore_eos) and
times each phase of every decode step: scheduling, batch building, the model forward, fusion, sampling and
postprocessing (stop checks, detokenization, outputs). Prefill steps are excluded. Then, per generated token,
the cost of what happens after the engine: pickling the step's outputs for the core -> front pipe, the
worker's NDJSON line, the gateway's parse of it and its SSE chunk.
Prints a table and writes JSON (default benchmarks/results/step_profile.json).

    python benchmarks/step_profile.py [--streams 8,32] [--tokens 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from counterpoint.decoders import RequestContext
from counterpoint.decoders.plain import Plain
from counterpoint.server.worker import loader
from counterpoint.server.worker.torch import engine as engine_mod
from counterpoint.server.worker.torch.engine import Engine, EngineConfig
from counterpoint.server.worker_protocol import SamplingParams, WorkerEvent

PROMPT = [{"role": "user", "content": "Tell me about the history of Rome."}]
BUILD = engine_mod.StepBatch.build
PHASES = ["schedule", "build", "forward", "fuse", "sample", "postprocess"]


class Timed:
    """Wraps the engine's phases with timers; `decode` restricts the totals to decode-only steps."""

    def __init__(self, engine: Engine):
        self.engine, self.totals, self.decode = engine, defaultdict(float), False
        self._wrap(engine.scheduler, "schedule", "schedule")
        self._wrap(engine, "fuse", "fuse")
        self._wrap(engine, "sampler", "sample")
        self._wrap(engine, "postprocess", "postprocess")
        for runner in engine.runners.values():
            self._wrap(runner, "run", "forward")
        engine_mod.StepBatch.build = staticmethod(self._timer("build", BUILD))

    def _timer(self, phase: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.decode:
                    self.totals[phase] += time.perf_counter() - start
        return timed

    def _wrap(self, obj, name: str, phase: str) -> None:
        setattr(obj, name, self._timer(phase, getattr(obj, name)))


def profile(engine: Engine, streams: int, tokens: int) -> dict:
    tok = engine.tokenizer
    ids = list(tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True)["input_ids"])
    timed = Timed(engine)
    for i in range(streams):
        engine.add(f"s{i}", 0, Plain(Plain.Params(), RequestContext(ids, None)),
                   SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True))
    engine.step()  # the prefill step of every stream
    steps, generated, wall, outputs = 0, 0, 0.0, []
    while engine.has_work:
        timed.decode = True
        start = time.perf_counter()
        outs = engine.step()
        wall += time.perf_counter() - start
        timed.decode = False
        steps += 1
        generated += sum(len(o.token_ids) for o in outs)
        outputs.append(outs)
    framing = framing_us(outputs)
    per_step = {p: timed.totals[p] / steps * 1e3 for p in PHASES}
    return {"streams": streams, "steps": steps, "tokens": generated, "step_ms": wall / steps * 1e3,
            "tokens_per_s": generated / wall, "phases_ms": per_step,
            "other_ms": wall / steps * 1e3 - sum(per_step.values()), "framing_us_per_token": framing}


def framing_us(steps: list[list]) -> dict:
    """Per token: pickle for the pipe, the worker's NDJSON line, the gateway's parse and SSE chunk."""
    outs = [o for step in steps for o in step]
    n = sum(len(o.token_ids) for o in outs)
    start = time.perf_counter()
    for step in steps:
        pickle.loads(pickle.dumps(step))
    pipe = time.perf_counter() - start
    start = time.perf_counter()
    lines = [WorkerEvent(type="delta", index=o.index, text=o.text, token_ids=o.token_ids,
                         finish_reason=o.finish_reason).model_dump_json(exclude_defaults=True) for o in outs]
    ndjson = time.perf_counter() - start
    start = time.perf_counter()
    for line in lines:
        event = WorkerEvent.model_validate_json(line)
        json.dumps({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                    "choices": [{"index": event.index, "delta": {"content": event.text},
                                 "finish_reason": event.finish_reason}]}, separators=(",", ":"), ensure_ascii=False)
    sse = time.perf_counter() - start
    return {"pipe": pipe / n * 1e6, "ndjson": ndjson / n * 1e6, "gateway": sse / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="8,32")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/step_profile.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = loader.resolve(loader.DEFAULT_MODEL)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    for n in (int(s) for s in args.streams.split(",")):
        engine = Engine(model, tokenizer, EngineConfig(kv_cache_bytes=1 << 30))
        rows.append(profile(engine, n, args.tokens))
    print(f"default model, float32, {args.threads} threads, plain greedy, {args.tokens} tokens per stream; "
          "ms per decode step")
    print(f"{'streams':>7} {'step':>7} " + " ".join(f"{p:>11}" for p in PHASES) + f" {'other':>7} {'tok/s':>7}"
          "  framing us/token (pipe, ndjson, gateway)")
    for r in rows:
        f = r["framing_us_per_token"]
        print(f"{r['streams']:7d} {r['step_ms']:7.1f} " + " ".join(f"{r['phases_ms'][p]:11.2f}" for p in PHASES)
              + f" {r['other_ms']:7.2f} {r['tokens_per_s']:7.1f}  {f['pipe']:.0f}, {f['ndjson']:.0f}, {f['gateway']:.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
