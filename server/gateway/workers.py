"""The gateway's view of its workers: which models each serves, health, load, and streaming from them.

Requests go to the healthy worker serving the model with the fewest outstanding requests. A worker that
cannot be reached before anything was streamed is marked down and the request tries the next one; a
background loop re-checks every worker's /info so one that comes back is used again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from ..errors import APIError
from ..worker_protocol import GenerateRequest, WorkerEvent

log = logging.getLogger(__name__)


@dataclass
class Worker:
    url: str
    models: dict[str, dict] = field(default_factory=dict)  # model id -> its /info entry
    healthy: bool = False
    outstanding: int = 0


class WorkerPool:
    def __init__(self, urls: list[str], timeout: float = 600.0, health_interval: float = 5.0):
        self.workers = [Worker(u.rstrip("/")) for u in urls]
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5.0),
                                        limits=httpx.Limits(max_connections=1024, max_keepalive_connections=64))
        self.health_interval = health_interval
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._health_loop())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        await self.client.aclose()

    async def refresh(self) -> None:
        await asyncio.gather(*(self._check(w) for w in self.workers))

    async def _check(self, worker: Worker) -> None:
        try:
            r = await self.client.get(f"{worker.url}/info", timeout=5.0)
            r.raise_for_status()
            worker.models = {m["id"]: m for m in r.json()["models"]}
            worker.healthy = True
        except (httpx.HTTPError, ValueError, KeyError):
            worker.healthy = False

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            await self.refresh()

    def models(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for w in self.workers:
            if w.healthy:
                out.update(w.models)
        return out

    def _candidates(self, model: str) -> list[Worker]:
        serving = [w for w in self.workers if model in w.models]
        if not serving:
            if not any(w.healthy for w in self.workers):
                raise APIError(503, "no worker is ready yet; try again shortly", code="no_worker_ready")
            raise APIError(404, f"The model {model!r} does not exist.", "model", "model_not_found")
        healthy = sorted((w for w in serving if w.healthy), key=lambda w: w.outstanding)
        if not healthy:
            raise APIError(503, f"no worker serving {model!r} is ready; try again shortly", code="no_worker_ready")
        return healthy

    async def open(self, req: GenerateRequest) -> AsyncIterator[WorkerEvent]:
        """Start the request on a worker; errors before streaming raise APIError (status from the worker)."""
        for worker in self._candidates(req.model):
            try:
                response = await self.client.send(
                    self.client.build_request("POST", f"{worker.url}/generate", content=req.model_dump_json(),
                                              headers={"content-type": "application/json"}), stream=True)
            except httpx.TransportError:
                worker.healthy = False
                log.warning("worker %s unreachable; trying another", worker.url)
                continue
            if response.status_code != 200:
                body = await response.aread()
                await response.aclose()
                raise _worker_error(response.status_code, body)
            return _events(worker, response)
        raise APIError(503, "no worker could take the request; try again shortly", code="no_worker_ready")


def _worker_error(status: int, body: bytes) -> APIError:
    try:
        err = json.loads(body)["error"]
        return APIError(status, err["message"], err.get("param"), err.get("code"))
    except (ValueError, KeyError, TypeError):
        return APIError(502 if status >= 500 else status, "the worker refused the request")


async def _events(worker: Worker, response: httpx.Response) -> AsyncIterator[WorkerEvent]:
    worker.outstanding += 1
    try:
        async for line in response.aiter_lines():
            if line:
                yield WorkerEvent.model_validate_json(line)
    except httpx.HTTPError:
        worker.healthy = False
        yield WorkerEvent(type="error", message="the worker stopped answering", status=502)
    finally:
        worker.outstanding -= 1
        await response.aclose()
