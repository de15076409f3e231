"""`counterpoint serve`: start the workers as child processes, wait until they answer, run the gateway.

A supervisor thread restarts a worker that exits; the workers are stopped when the gateway stops, and on
Linux they also get SIGTERM from the kernel when `serve` dies in any other way (uvicorn re-raises SIGTERM
after its own shutdown, which skips `finally`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

import httpx
import uvicorn

from .cli import is_loopback
from .config import Settings, worker_env
from .gateway.app import create_app
from .worker import loader

log = logging.getLogger("counterpoint.serve")

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None  # resolved before fork


def _die_with_parent() -> None:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class WorkerProcess:
    def __init__(self, settings: Settings, index: int):
        self.port = settings.worker_port + index
        self.url = f"http://{settings.worker_host}:{self.port}"
        self.args = [sys.executable, "-m", "counterpoint.server.cli", "worker", "--host", settings.worker_host,
                     "--port", str(self.port), "--model", settings.model, "--dtype", settings.dtype,
                     "--device", settings.device, "--backend", settings.backend,
                     "--gpu-memory-utilization", str(settings.gpu_memory_utilization)]
        for flag, value in (("--served-model-name", settings.served_model_name), ("--amateur", settings.amateur),
                            ("--kv-cache-gb", settings.kv_cache_gb),
                            ("--max-model-len", settings.max_model_len), ("--threads", settings.threads)):
            if value is not None:
                self.args += [flag, str(value)]
        self.env = worker_env(settings, dict(os.environ))  # limits and the internal token, shared with the gateway
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # preexec_fn only calls prctl(2), resolved before the fork: safe with the gateway's threads running
        self.proc = subprocess.Popen(self.args, env=self.env,
                                     preexec_fn=_die_with_parent if _prctl else None)  # noqa: PLW1509

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_ready(workers: list[WorkerProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(workers)
    while pending and time.monotonic() < deadline:
        for w in list(pending):
            if w.proc.poll() is not None:
                raise SystemExit(f"worker on port {w.port} exited with code {w.proc.returncode}")
            try:
                if httpx.get(f"{w.url}/health", timeout=1.0).status_code == 200:
                    pending.remove(w)
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    if pending:
        raise SystemExit(f"workers not ready after {timeout:.0f}s")


def supervise(workers: list[WorkerProcess], stop: threading.Event) -> None:
    while not stop.wait(1.0):
        for w in workers:
            if w.proc.poll() is not None:
                log.warning("worker on port %d exited (code %s); restarting", w.port, w.proc.returncode)
                w.start()


def serve(settings: Settings) -> None:
    loader.resolve(settings.model)  # convert a GGUF once, here, not in every worker at the same time
    if settings.amateur:
        loader.resolve(settings.amateur)
    if not settings.internal_token and not is_loopback(settings.worker_host):
        settings.internal_token = secrets.token_urlsafe(32)  # workers reachable from outside answer only us
    workers = [WorkerProcess(settings, i) for i in range(settings.workers)]
    stop = threading.Event()
    try:
        for w in workers:
            w.start()
        wait_ready(workers, timeout=600)
        threading.Thread(target=supervise, args=(workers, stop), daemon=True).start()
        settings.worker_urls = [w.url for w in workers]
        log.info("serving on http://%s:%d/v1", settings.host, settings.port)
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning",
                    timeout_graceful_shutdown=settings.shutdown_grace)
    finally:
        stop.set()
        for w in workers:
            w.stop()
