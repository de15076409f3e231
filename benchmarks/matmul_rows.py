"""Why extra rows are not free on a CPU: time of one linear layer with M = 1, 2, 4, 8 input rows.

A GPU reads the weights once whatever M is; this CPU's BLAS uses a matrix-vector kernel at M = 1 and a
matrix-matrix kernel above it, so a second row (cfg, lqcd, vcd, ...) costs a large part of a first one.
Shapes are the default model's (SmolLM2-135M): attention/MLP projections and the 49152-word lm_head.
Prints a table and writes JSON (default benchmarks/results/matmul_rows.json).

    python benchmarks/matmul_rows.py [--threads 2] [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

SHAPES = {"q/o proj 576x576": (576, 576), "mlp up 576x1536": (576, 1536), "mlp down 1536x576": (1536, 576),
          "lm_head 576x49152": (576, 49152)}
ROWS = (1, 2, 4, 8)


def time_linear(k: int, n: int, m: int, repeats: int) -> float:
    w, x = torch.randn(n, k), torch.randn(m, k)
    for _ in range(5):
        torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(3):  # best of three batches of repeats
        t = time.perf_counter()
        for _ in range(repeats):
            torch.nn.functional.linear(x, w)
        best = min(best, (time.perf_counter() - t) / repeats)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--out", default="benchmarks/results/matmul_rows.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    print(f"torch {torch.__version__}, {args.threads} threads; microseconds per call, and x the 1-row time")
    print(f"{'layer':<20}" + "".join(f"{f'M={m}':>16}" for m in ROWS))
    for name, (k, n) in SHAPES.items():
        us = [time_linear(k, n, m, args.repeats if n < 10000 else max(5, args.repeats // 20)) for m in ROWS]
        results[name] = dict(zip(map(str, ROWS), us))
        print(f"{name:<20}" + "".join(f"{u:>9.0f} ({u / us[0]:.2f}x)" for u in us))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"threads": args.threads, "us_per_call": results}, indent=2))


if __name__ == "__main__":
    main()
