"""Serving speed on the default model: counterpoint vs transformers generate(), batching, gateway overhead.

Starts `counterpoint serve`, then measures, one after another in this run:
  1. transformers `generate(do_sample=False)` tokens/s at batch 1 (same model, dtype and thread count);
  2. counterpoint single-stream greedy tokens/s through the gateway (streamed);
  3. aggregate tokens/s of 8 concurrent streams;
  4. the gateway's added latency: the same non-streamed request through the gateway and straight to the
     worker's /generate, median of many.
Prints a table and writes JSON (default benchmarks/results/serving.json).

    python benchmarks/serving.py [--tokens 128] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

PROMPTS = ["Write a story about a cat.", "Explain how a bicycle works.", "Describe the ocean at night.",
           "Tell me about the history of Rome.", "Write a poem about autumn.", "How do airplanes fly?",
           "Describe your ideal city.", "What makes a good teacher?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hf_generate_tps(model_dir: Path, tokens: int, threads: int) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.generation_config.eos_token_id = None  # always generate `tokens` tokens, like ignore_eos
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True,
                                  tokenize=True, return_tensors="pt")["input_ids"]
    model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)  # warm-up
    start = time.perf_counter()
    model.generate(ids, max_new_tokens=tokens, do_sample=False, pad_token_id=0)
    return tokens / (time.perf_counter() - start)


async def stream_tokens(client: httpx.AsyncClient, url: str, prompt: str, tokens: int) -> int:
    body = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": prompt}],
            "temperature": 0, "max_tokens": tokens, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    usage = 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]["completion_tokens"]
    return usage


async def streams_tps(url: str, n: int, tokens: int) -> float:
    async with httpx.AsyncClient(timeout=600) as client:
        await stream_tokens(client, url, PROMPTS[0], 4)  # warm-up
        start = time.perf_counter()
        counts = await asyncio.gather(*(stream_tokens(client, url, PROMPTS[i % 8], tokens) for i in range(n)))
        return sum(counts) / (time.perf_counter() - start)


def overhead_ms(gateway: str, worker: str, repeats: int) -> tuple[float, float]:
    chat = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0, "max_tokens": 1}
    direct = {"request_id": "bench", "model": "SmolLM2-135M-Instruct", "messages": chat["messages"],
              "sampling": {"temperature": 0, "max_tokens": 1}}
    via, straight = [], []
    with httpx.Client(timeout=60) as client:
        for i in range(repeats):
            t = time.perf_counter()
            client.post(f"{gateway}/v1/chat/completions", json=chat).raise_for_status()
            via.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = client.post(f"{worker}/generate", json={**direct, "request_id": f"bench-{i}"})
            r.raise_for_status()
            straight.append(time.perf_counter() - t)
    return statistics.median(via) * 1e3, statistics.median(straight) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--out", default="benchmarks/results/serving.json")
    args = ap.parse_args()

    from counterpoint.server.worker import loader
    model_dir = loader.resolve(loader.DEFAULT_MODEL)
    port, wport = free_port(), free_port()
    log = tempfile.NamedTemporaryFile(prefix="serve-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "counterpoint.server.cli", "serve", "--port", str(port),
                             "--worker-port", str(wport), "--threads", str(args.threads)],
                            stdout=log, stderr=subprocess.STDOUT)
    url, worker = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{wport}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        hf = hf_generate_tps(model_dir, args.tokens, args.threads)
        one = asyncio.run(streams_tps(url, 1, args.tokens))
        eight = asyncio.run(streams_tps(url, 8, args.tokens))
        via, straight = overhead_ms(url, worker, args.repeats)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rows = [
        ("transformers generate(), batch 1", f"{hf:.1f} tok/s", ""),
        ("counterpoint, 1 stream", f"{one:.1f} tok/s", f"{one / hf:.2f}x generate() (target >= 0.8x)"),
        ("counterpoint, 8 concurrent streams", f"{eight:.1f} tok/s", f"{eight / one:.2f}x 1 stream (target >= 3x)"),
        ("non-streamed request via gateway", f"{via:.1f} ms", ""),
        ("same request straight to worker", f"{straight:.1f} ms", f"gateway adds {via - straight:.1f} ms (target < 5)"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"default model, float32, {args.threads} threads, {args.tokens} tokens, cpu={os.cpu_count()}")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "tokens": args.tokens, "threads": args.threads, "hf_generate_tps": hf, "one_stream_tps": one,
        "eight_streams_tps": eight, "ratio_vs_generate": one / hf, "ratio_8_vs_1": eight / one,
        "gateway_ms": via, "worker_ms": straight, "gateway_overhead_ms": via - straight}, indent=2))


if __name__ == "__main__":
    main()
