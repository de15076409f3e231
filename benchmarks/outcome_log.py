"""What the outcome log costs a request, and how fast its writer drains.

  1. `OutcomeLog.record` latency (the only part on the request path): median and p99 over many calls,
     while the writer thread is busy with the same rows;
  2. writer throughput: rows committed per second from a full queue (one `close()` drain);
  3. the same with a deliberately slow disk (every batch commit delayed), to show `record` stays flat.
Prints a table and writes JSON (default benchmarks/results/outcome_log.json).

    python benchmarks/outcome_log.py [--rows 20000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from counterpoint.server.outcomes import Outcome, OutcomeLog


def outcome(i: int) -> Outcome:
    return Outcome(id=f"c{i}", model="m", method="cd", latency=0.5, prompt_tokens=30, completion_tokens=100,
                   ttft=0.05, finish_reason="stop", experiment="exp", arm="a" if i % 2 else "b",
                   decoding={"method": "cd", "params": {"alpha": 0.1, "beta": 0.5}})


class SlowLog(OutcomeLog):
    def _write(self, items):
        time.sleep(0.05)  # a 50 ms fsync on every batch
        return super()._write(items)


def measure(cls: type[OutcomeLog], rows: int, folder: Path) -> dict:
    log = cls(str(folder / f"{cls.__name__}.db"))
    costs = []
    started = time.perf_counter()
    for i in range(rows):
        t = time.perf_counter()
        log.record(outcome(i))
        costs.append(time.perf_counter() - t)
    queued = time.perf_counter()
    log.close()
    done = time.perf_counter()
    costs.sort()
    return {"log": cls.__name__, "rows": rows, "record_median_us": statistics.median(costs) * 1e6,
            "record_p99_us": costs[int(0.99 * len(costs))] * 1e6, "drain_after_last_record_s": done - queued,
            "rows_per_s": rows / (done - started)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "outcome_log.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(cls, args.rows, Path(tmp)) for cls in (OutcomeLog, SlowLog)]
    print(f"{'log':<12}{'rows':>8}{'record p50 us':>15}{'record p99 us':>15}{'drain s':>10}{'rows/s':>10}")
    for r in results:
        print(f"{r['log']:<12}{r['rows']:>8}{r['record_median_us']:>15.1f}{r['record_p99_us']:>15.1f}"
              f"{r['drain_after_last_record_s']:>10.2f}{r['rows_per_s']:>10.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
