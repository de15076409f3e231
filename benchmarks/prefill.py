"""Long prompts on the torch worker: chunked prefill and prefix caching, each against its off switch.

1. Chunked prefill: a stream is decoding when a ~4k-token prompt arrives. Reported: the stream's worst gap
   between tokens while the long prompt is computed, and the long request's time to first token, with
   `max_num_batched_tokens` 512 (chunks) against 8192 (the whole prompt in one step).
2. Prefix caching: two requests share a long system prompt. Reported: time to first token of the second
   (the first has finished), with prefix caching on and off.

Each case runs against its own `counterpoint worker` on the default model (streamed /generate, greedy).
Prints a table and writes JSON (default benchmarks/results/prefill.json).

    python benchmarks/prefill.py [--prompt-tokens 4096] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

SYSTEM = ("You are a meticulous research assistant. You cite sources, state uncertainty, and never invent "
          "facts. You answer in plain English, in short paragraphs, and you check every number twice. ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_worker(threads: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "counterpoint.server.cli", "worker", "--port", str(port),
                             "--threads", str(threads), "--max-model-len", "8192", "--kv-cache-gb", "2", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.25)
    raise RuntimeError("worker did not start")


def stream(url: str, messages: list[dict], max_tokens: int, stamps: list[float], started: threading.Event | None = None,
           after: int = 0) -> None:
    """Stream /generate; append the arrival time of every delta with tokens; set `started` after `after`."""
    body = {"request_id": uuid.uuid4().hex, "model": "SmolLM2-135M-Instruct", "messages": messages,
            "sampling": {"temperature": 0, "max_tokens": max_tokens, "ignore_eos": True}}
    with httpx.stream("POST", f"{url}/generate", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if '"type":"delta"' in line and '"token_ids"' in line:
                stamps.append(time.perf_counter())
                if started is not None and len(stamps) == after:
                    started.set()


def chunked_case(url: str, prompt_tokens: int) -> dict:
    long = [{"role": "user", "content": "Summarise: " + "the quick brown fox jumps over the lazy dog " * (prompt_tokens // 10)}]
    short = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
    stream(url, short, 4, [])  # warm-up
    running, started = [], threading.Event()
    t = threading.Thread(target=stream, args=(url, short, 200, running, started, 8))
    t.start()
    started.wait()
    sent = time.perf_counter()
    arrived: list[float] = []
    stream(url, long, 1, arrived)
    t.join()
    during = [b - a for a, b in zip(running, running[1:]) if b > sent and a < arrived[0]]
    steady = [b - a for a, b in zip(running[:8], running[1:8])]
    return {"worst_gap_ms": max(during) * 1e3, "steady_gap_ms": sorted(steady)[len(steady) // 2] * 1e3,
            "long_ttft_s": arrived[0] - sent}


def prefix_case(url: str, system_repeats: int) -> float:
    system = {"role": "system", "content": SYSTEM * system_repeats}
    stream(url, [system, {"role": "user", "content": "Who wrote Hamlet?"}], 2, [])
    t, first = time.perf_counter(), []
    stream(url, [system, {"role": "user", "content": "What is the boiling point of water?"}], 1, first)
    return first[0] - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt-tokens", type=int, default=4096)
    ap.add_argument("--system-repeats", type=int, default=60, help="copies of the system text (~35 tokens each)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/prefill.json")
    args = ap.parse_args()
    results = {}
    for name, extra in (("chunked 512", ["--config", _toml("max_num_batched_tokens = 512")]),
                        ("unchunked", ["--config", _toml("max_num_batched_tokens = 8192")]),
                        ("prefix cache on", []),
                        ("prefix cache off", ["--config", _toml("enable_prefix_caching = false")])):
        proc, url = start_worker(args.threads, extra)
        try:
            if name.startswith("prefix"):
                results[name] = {"second_ttft_s": prefix_case(url, args.system_repeats)}
            else:
                results[name] = chunked_case(url, args.prompt_tokens)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"default model, float32, {args.threads} threads; a {args.prompt_tokens}-token prompt arrives while "
          "a stream decodes")
    for name in ("chunked 512", "unchunked"):
        r = results[name]
        print(f"{name:<18} worst gap {r['worst_gap_ms']:8.0f} ms  (steady {r['steady_gap_ms']:5.0f} ms)  "
              f"long prompt's first token {r['long_ttft_s']:6.2f} s")
    on, off = results["prefix cache on"]["second_ttft_s"], results["prefix cache off"]["second_ttft_s"]
    print(f"shared system prompt (~{args.system_repeats * 35} tokens): second request's first token "
          f"{on * 1e3:.0f} ms cached, {off * 1e3:.0f} ms uncached ({off / on:.1f}x)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


def _toml(line: str) -> str:
    path = Path(f"/tmp/counterpoint-bench-{uuid.uuid4().hex}.toml")
    path.write_text(line + "\n")
    return str(path)


if __name__ == "__main__":
    main()
