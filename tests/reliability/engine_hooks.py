"""Backend patches that tests install inside a worker's engine core process (`COUNTERPOINT_ENGINE_HOOK`)."""

from __future__ import annotations

import os
import time

STEP_PAUSE = 0.02  # seconds `slow_steps` adds to every engine step
FAIL_IDS = "COUNTERPOINT_TEST_FAIL_IDS"  # comma-separated token ids that poison a request (`fail_on_marker`)


def slow_steps(backend):
    """Every step pauses STEP_PAUSE first, so a request's length in steps decides whether it still runs."""
    step = backend.step

    def slow():
        time.sleep(STEP_PAUSE)
        return step()
    backend.step = slow
    return backend


def fail_on_marker(backend):
    """Every forward that holds a request whose prompt contains the FAIL_IDS tokens raises (with a message
    naming a file, which must never reach a client), as a request that breaks the model would; forwards
    without it run normally."""
    marker = [int(t) for t in os.environ[FAIL_IDS].split(",")]
    run = backend.run

    def poisoned(groups):
        if any(_contains(g.seqs[0].token_ids, marker) for g in groups):
            raise RuntimeError("poisoned request in /opt/secret/model.py line 42")
        return run(groups)
    backend.run = poisoned
    return backend


def _contains(ids: list[int], marker: list[int]) -> bool:
    n = len(marker)
    return any(ids[i:i + n] == marker for i in range(len(ids) - n + 1))
