"""The PyTorch and vLLM worker backends side by side on the default model: plain and cfg, 1 and 8 streams.

Starts `counterpoint worker --backend torch`, measures, stops it, then the same with `--backend vllm`
(run this from the vLLM environment, .venv-vllm: see .ci/vllm.sh). Each case sends N concurrent streamed
/generate requests (greedy, ignore_eos, `--tokens` new tokens each) straight to the worker and reports
aggregate generated tokens/s, mean time to first token and mean per-stream tokens/s. cfg uses a negative
prompt, so each request is two rows of every forward on both backends.
Prints a table and writes JSON (default benchmarks/results/backends.json).

    .venv-vllm/bin/python benchmarks/backends.py [--tokens 64] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

PROMPTS = ["Write a story about a cat.", "Explain how a bicycle works.", "Describe the ocean at night.",
           "Tell me about the history of Rome.", "Write a poem about autumn.", "How do airplanes fly?",
           "Describe your ideal city.", "What makes a good teacher?"]
CASES = [("plain", 1), ("plain", 8), ("cfg", 1), ("cfg", 8)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_worker(backend: str, port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    args = [sys.executable, "-m", "counterpoint.server.cli", "worker", "--backend", backend, "--port", str(port),
            "--served-model-name", "m", "--threads", str(threads), "--max-model-len", "2048"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{backend} worker exited with code {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"{backend} worker not ready")


async def one_stream(client: httpx.AsyncClient, url: str, method: str, prompt: str, tokens: int) -> dict:
    body = {"request_id": uuid.uuid4().hex, "model": "m", "messages": [{"role": "user", "content": prompt}],
            "sampling": {"temperature": 0, "max_tokens": tokens, "ignore_eos": True}}
    if method == "cfg":
        body["decoding"] = {"method": "cfg", "params": {"guidance_scale": 1.5, "negative_messages": [
            {"role": "user", "content": "Answer briefly."}]}}
    start, first, count = time.perf_counter(), None, 0
    async with client.stream("POST", f"{url}/generate", json=body) as r:
        async for line in r.aiter_lines():
            if not line.strip():
                continue
            event = json.loads(line)
            if event["type"] == "error":
                raise RuntimeError(event.get("message"))
            if event["type"] == "delta" and event.get("token_ids"):
                first = first or time.perf_counter()
                count += len(event["token_ids"])
    end = time.perf_counter()
    return {"tokens": count, "ttft": (first or end) - start, "seconds": end - start}


async def run_case(url: str, method: str, streams: int, tokens: int) -> dict:
    async with httpx.AsyncClient(timeout=1800) as client:
        await one_stream(client, url, method, PROMPTS[0], 4)  # warm-up
        start = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, url, method, PROMPTS[i % len(PROMPTS)], tokens)
                                         for i in range(streams)))
        wall = time.perf_counter() - start
    total = sum(r["tokens"] for r in results)
    return {"method": method, "streams": streams, "tokens": total, "wall_s": round(wall, 2),
            "tokens_per_s": round(total / wall, 2),
            "ttft_s": round(sum(r["ttft"] for r in results) / streams, 3),
            "per_stream_tokens_per_s": round(sum(r["tokens"] / r["seconds"] for r in results) / streams, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--backends", default="torch,vllm")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "backends.json"))
    args = ap.parse_args()
    rows = []
    for backend in args.backends.split(","):
        port = free_port()
        proc = start_worker(backend, port, args.threads)
        try:
            for method, streams in CASES:
                row = {"backend": backend, **asyncio.run(run_case(f"http://127.0.0.1:{port}", method, streams,
                                                                  args.tokens))}
                print(row, flush=True)
                rows.append(row)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\n{'backend':8} {'method':6} {'streams':>7} {'tok/s':>8} {'TTFT s':>7} {'tok/s/stream':>12}")
    for r in rows:
        print(f"{r['backend']:8} {r['method']:6} {r['streams']:7d} {r['tokens_per_s']:8.2f} {r['ttft_s']:7.3f} "
              f"{r['per_stream_tokens_per_s']:12.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"tokens": args.tokens, "threads": args.threads, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
