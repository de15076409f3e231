"""Why the engine core steps on its own process's main thread: torch's speed by thread placement.

On CPUs with MKL and GNU OpenMP (this machine's torch build), a matmul runs several times slower while a
second live thread of the same process has used OpenMP: the old worker ran its engine in a thread beside an
event loop whose thread had done torch work too. Each case runs in a fresh process:

  main            the main thread only
  thread-alone    a second thread, the main thread never computed
  thread-beside   a second thread while the main thread (alive) has computed before: the old worker
  main-beside     the main thread while a second thread that computed is still alive

    python benchmarks/threads.py [--threads 2] [--repeats 20000] [--out benchmarks/results/threads.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CASE = r"""
import sys, threading, time, torch
threads, repeats, case = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(threads)
a, w = torch.randn(1, 576), torch.randn(1536, 576)  # one decode row through a SmolLM2-sized MLP matrix

def loop():
    for _ in range(200):
        torch.nn.functional.linear(a, w)
    t = time.perf_counter()
    for _ in range(repeats):
        torch.nn.functional.linear(a, w)
    return (time.perf_counter() - t) / repeats * 1e6

def other(done=None, out=None):
    if out is not None:
        out.append(loop())
    else:
        torch.randn(256, 256) @ torch.randn(256, 256)
        done.wait()

result = []
if case == "main":
    result.append(loop())
elif case == "thread-alone":
    t = threading.Thread(target=other, kwargs={"out": result}); t.start(); t.join()
elif case == "thread-beside":
    torch.randn(256, 256) @ torch.randn(256, 256)
    t = threading.Thread(target=other, kwargs={"out": result}); t.start(); t.join()
elif case == "main-beside":
    done = threading.Event()
    t = threading.Thread(target=other, kwargs={"done": done}); t.start(); time.sleep(0.3)
    result.append(loop()); done.set(); t.join()
print(result[0])
"""

CASES = ["main", "thread-alone", "thread-beside", "main-beside"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20000)
    ap.add_argument("--out", default="benchmarks/results/threads.json")
    args = ap.parse_args()
    rows = {}
    for case in CASES:
        out = subprocess.run([sys.executable, "-c", CASE, str(args.threads), str(args.repeats), case],
                             capture_output=True, text=True, check=True).stdout
        rows[case] = float(out.strip().splitlines()[-1])
    base = rows["main"]
    print(f"{'case':<15} {'us per linear':>14} {'vs main':>8}")
    for case, us in rows.items():
        print(f"{case:<15} {us:>14.1f} {us / base:>7.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"threads": args.threads, "us_per_linear": rows}, indent=2))


if __name__ == "__main__":
    main()
