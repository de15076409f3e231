"""Scale-out: aggregate throughput through one gateway with 1 vs 2 worker processes, and the gateway's own
overhead per request (through the gateway vs. the worker's /generate directly).

Every process is real: `counterpoint worker` and `counterpoint gateway` subprocesses on loopback. On a
2-core machine two workers share the same two cores, so the 2-worker figure is bounded by the CPU, not by
the gateway; on a GPU host each worker would hold its own device.

    python benchmarks/scale_out.py --tiny                 # a tiny random Llama (fast; measures the serving path)
    python benchmarks/scale_out.py --model smollm2        # the embedded default model
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

RESULTS = Path(__file__).parent / "results"
PROMPT = "The history of the city begins"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model(path: Path) -> Path:
    """A 2-layer random Llama with the embedded model's tokenizer (as the tests build it)."""
    import torch
    from counterpoint.server.worker import loader
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(loader.resolve(loader.DEFAULT_MODEL))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def spawn(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "counterpoint.server.cli", *args, "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{args[0]} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{args[0]} did not become ready")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


async def throughput(gateway: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    """`requests` completions, `concurrency` at a time; generated tokens per second over the whole run."""
    body = {"model": "bench", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    queue: asyncio.Queue = asyncio.Queue()
    for _ in range(requests):
        queue.put_nowait(body)
    tokens, latencies = 0, []

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal tokens
        while not queue.empty():
            req = queue.get_nowait()
            t0 = time.perf_counter()
            r = await client.post("/v1/completions", json=req)
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)
            tokens += r.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(base_url=gateway, timeout=600) as client:
        warm = {**body, "max_tokens": 2}  # warm every worker up: least-outstanding spreads these
        await asyncio.gather(*(client.post("/v1/completions", json=warm) for _ in range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"requests": requests, "concurrency": concurrency, "max_tokens": max_tokens, "seconds": elapsed,
            "tokens": tokens, "tokens_per_s": tokens / elapsed, "requests_per_s": requests / elapsed,
            "p50_latency_s": statistics.median(latencies)}


async def overhead(gateway: str, worker: str, rounds: int) -> dict:
    """Sequential 1-token requests, alternating direct-to-worker and through-the-gateway; medians in ms."""
    direct, via = [], []
    gen = {"request_id": "", "model": "bench", "prompt": PROMPT, "sampling": {"max_tokens": 1, "temperature": 0}}
    comp = {"model": "bench", "prompt": PROMPT, "max_tokens": 1, "temperature": 0}
    async with httpx.AsyncClient(timeout=120) as client:
        for i in range(rounds + 3):  # the first 3 rounds warm up connections and caches
            t0 = time.perf_counter()
            async with client.stream("POST", f"{worker}/generate", json={**gen, "request_id": f"direct-{i}"}) as r:
                r.raise_for_status()
                async for _ in r.aiter_lines():
                    pass
            t1 = time.perf_counter()
            r = await client.post(f"{gateway}/v1/completions", json=comp)
            r.raise_for_status()
            t2 = time.perf_counter()
            if i >= 3:
                direct.append((t1 - t0) * 1e3)
                via.append((t2 - t1) * 1e3)
    return {"rounds": rounds, "direct_ms_p50": statistics.median(direct), "gateway_ms_p50": statistics.median(via),
            "overhead_ms_p50": statistics.median(v - d for v, d in zip(via, direct))}


def run(args: argparse.Namespace, model: str, logs: Path) -> dict:
    """Two workers stay up; one gateway routes to the first only, another to both. The phases alternate
    (1, 2, 1, 2, ...) so that load from other processes on the machine hits both settings alike."""
    worker_args = ["worker", "--model", model, "--served-model-name", "bench", "--threads", str(args.threads),
                   "--kv-cache-gb", "0.25"]
    procs: list[subprocess.Popen] = []
    try:
        urls = []
        for i in range(2):
            proc, url = spawn(worker_args, logs / f"worker{i}.log")
            procs.append(proc)
            urls.append(url)
        gateways = {}
        for n in (1, 2):
            proc, gateways[n] = spawn(["gateway", *[a for u in urls[:n] for a in ("--worker", u)]],
                                      logs / f"gateway{n}.log")
            procs.append(proc)
        samples: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for n in (1, 2):
                samples[n].append(asyncio.run(throughput(gateways[n], args.concurrency, args.requests,
                                                         args.max_tokens)))
        out = {f"{n}_workers": {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                                "requests_per_s": statistics.median(r["requests_per_s"] for r in runs),
                                "p50_latency_s": statistics.median(r["p50_latency_s"] for r in runs),
                                "runs": runs} for n, runs in samples.items()}
        out["overhead"] = asyncio.run(overhead(gateways[1], urls[0], args.rounds))
        return out
    finally:
        stop(procs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="model spec for the workers (default: the embedded one)")
    ap.add_argument("--tiny", action="store_true", help="use a tiny random Llama instead of --model")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per setting (medians reported)")
    ap.add_argument("--rounds", type=int, default=30, help="sequential requests for the overhead figure")
    ap.add_argument("--out", type=Path, default=RESULTS / "scale_out.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = str(tiny_model(Path(tmp) / "tiny")) if args.tiny else args.model
        result = run(args, model, Path(tmp))
    one, two, ov = result["1_workers"], result["2_workers"], result["overhead"]
    print(f"model={'tiny-random-llama' if args.tiny else args.model} threads/worker={args.threads} "
          f"cores={os.cpu_count()} concurrency={args.concurrency} requests={args.requests} "
          f"max_tokens={args.max_tokens} (medians of {args.repeats} alternating runs)")
    print(f"{'workers':>8} {'tokens/s':>10} {'req/s':>8} {'p50 s':>8}")
    for n, r in (("1", one), ("2", two)):
        print(f"{n:>8} {r['tokens_per_s']:>10.1f} {r['requests_per_s']:>8.2f} {r['p50_latency_s']:>8.3f}")
    print(f"speed-up 2 vs 1: {two['tokens_per_s'] / one['tokens_per_s']:.2f}x "
          f"(bounded by {os.cpu_count()} CPU cores shared by every process)")
    print(f"gateway overhead per request (1-token completions, p50 of {ov['rounds']}): direct "
          f"{ov['direct_ms_p50']:.1f} ms, via gateway {ov['gateway_ms_p50']:.1f} ms, "
          f"overhead {ov['overhead_ms_p50']:.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"model": "tiny-random-llama" if args.tiny else args.model, "threads_per_worker": args.threads,
              "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), **result}
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
