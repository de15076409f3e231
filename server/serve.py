"""`counterpoint serve`: start the workers as child processes, wait until they answer, run the gateway.

A supervisor thread restarts a worker that exits; the workers are stopped when the gateway stops.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import httpx
import uvicorn

from .config import Settings
from .gateway.app import create_app
from .worker import loader

log = logging.getLogger("counterpoint.serve")


class WorkerProcess:
    def __init__(self, settings: Settings, index: int):
        self.port = settings.worker_port + index
        self.url = f"http://{settings.worker_host}:{self.port}"
        self.args = [sys.executable, "-m", "counterpoint.server.cli", "worker", "--host", settings.worker_host,
                     "--port", str(self.port), "--model", settings.model, "--dtype", settings.dtype,
                     "--device", settings.device, "--kv-cache-gb", str(settings.kv_cache_gb),
                     "--backend", settings.backend]
        for flag, value in (("--served-model-name", settings.served_model_name), ("--amateur", settings.amateur),
                            ("--max-model-len", settings.max_model_len), ("--threads", settings.threads)):
            if value is not None:
                self.args += [flag, str(value)]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args)

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
    workers = [WorkerProcess(settings, i) for i in range(settings.workers)]
    stop = threading.Event()
    try:
        for w in workers:
            w.start()
        wait_ready(workers, timeout=600)
        threading.Thread(target=supervise, args=(workers, stop), daemon=True).start()
        settings.worker_urls = [w.url for w in workers]
        log.info("serving on http://%s:%d/v1", settings.host, settings.port)
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
    finally:
        stop.set()
        for w in workers:
            w.stop()
