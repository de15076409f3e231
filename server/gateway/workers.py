"""The gateway's view of its workers: which models each serves, health, load, and streaming from them.

Routing: a request goes to the healthy worker serving its model with the fewest outstanding requests
(ties broken at random). Failover, in the order things can go wrong:

- before anything was streamed to the client (connection refused, the worker died or hung before its
  first event, or it answered 429/503 because it is full), the request is tried on the next worker;
- after the first event was passed on, a lost worker ends the stream with an `error` event (502), never
  a hang: the health loop cancels the streams of a worker that misses `abort_after` checks in a row.

A background loop re-resolves `--worker-dns` names and checks every worker's /info every
`health_interval` seconds: one failed check stops new traffic to a worker, one good check readmits it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from ..config import Settings
from ..errors import APIError
from ..worker_protocol import GenerateRequest, WorkerEvent
from .discovery import DnsDiscovery, Resolver, resolve_all

log = logging.getLogger(__name__)

_RETRY_STATUSES = (429, 503)  # a worker that is full or not ready: another one may take the request
_JSON = {"content-type": "application/json"}


class WorkerLost(Exception):
    """The worker's stream broke (or was cancelled by the health loop) before it finished."""


@dataclass
class Worker:
    url: str
    models: dict[str, dict] = field(default_factory=dict)  # model id -> its /info entry
    healthy: bool = False
    outstanding: int = 0  # requests running on it now
    served: int = 0  # requests ever started on it
    failures: int = 0  # health checks failed in a row
    streams: set[asyncio.Task] = field(default_factory=set)  # the pumps reading from it

    def mark_down(self, why: str) -> None:
        if self.healthy:
            log.warning("worker %s is out of rotation: %s", self.url, why)
        self.healthy = False

    def abort_streams(self) -> None:
        for task in list(self.streams):
            task.cancel()


class WorkerPool:
    def __init__(self, urls: list[str], timeout: float = 600.0, health_interval: float = 2.0,
                 health_timeout: float = 2.0, abort_after: int = 3, dns: list[str] | None = None,
                 resolve: Resolver = resolve_all):
        self.static = [u.rstrip("/") for u in urls]
        self.by_url = {u: Worker(u) for u in self.static}
        self.discovery = DnsDiscovery(dns or [], resolve)
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5.0),
                                        limits=httpx.Limits(max_connections=1024, max_keepalive_connections=64))
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.abort_after = abort_after
        self._task: asyncio.Task | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerPool:
        return cls(settings.worker_urls, timeout=settings.request_timeout, dns=settings.worker_dns,
                   health_interval=settings.health_interval)

    @property
    def workers(self) -> list[Worker]:
        return list(self.by_url.values())

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._health_loop())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        for w in self.workers:
            w.abort_streams()
        await self.client.aclose()

    async def refresh(self) -> None:
        await self._discover()
        await asyncio.gather(*(self._check(w) for w in self.workers))

    async def _discover(self) -> None:
        if not self.discovery:
            return
        found = await self.discovery.urls()
        if found is None:
            return
        wanted = dict.fromkeys(self.static + found)
        for url in wanted.keys() - self.by_url.keys():
            log.info("discovered worker %s", url)
            self.by_url[url] = Worker(url)
        for url in self.by_url.keys() - wanted.keys():
            log.info("worker %s is gone from DNS", url)
            del self.by_url[url]  # its running streams keep their own reference and finish or fail

    async def _check(self, worker: Worker) -> None:
        try:
            r = await self.client.get(f"{worker.url}/info", timeout=self.health_timeout)
            r.raise_for_status()
            models = {m["id"]: m for m in r.json()["models"]}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            worker.failures += 1
            worker.mark_down(f"health check failed ({type(exc).__name__})")
            if worker.failures >= self.abort_after:
                worker.abort_streams()
            return
        if not worker.healthy:
            log.info("worker %s is ready (%s)", worker.url, ", ".join(models))
        worker.models, worker.healthy, worker.failures = models, True, 0

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await self.refresh()
            except Exception:  # never let one bad round stop the checks
                log.exception("health check round failed")

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
        healthy = sorted((w for w in serving if w.healthy), key=lambda w: (w.outstanding, random.random()))
        if not healthy:
            raise APIError(503, f"no worker serving {model!r} is ready; try again shortly", code="no_worker_ready")
        return healthy

    async def open(self, req: GenerateRequest) -> AsyncIterator[WorkerEvent]:
        """Start `req` on a worker and wait for its first event, trying the next worker while nothing was
        streamed. Refusals (400, 404, ...) raise APIError with the worker's status; so does the last
        429/503 when every worker is full."""
        refused: APIError | None = None
        for worker in self._candidates(req.model):
            if not worker.healthy:  # marked down while an earlier candidate was tried
                continue
            stream = WorkerStream(self.client, worker, req)
            try:
                first = await stream.next()
            except WorkerLost:
                log.warning("worker %s lost request %s before it started; trying another", worker.url,
                            req.request_id)
                continue
            except APIError as exc:
                if exc.status not in _RETRY_STATUSES:
                    raise
                refused = exc
                continue
            except BaseException:  # the client went away while we waited
                stream.close()
                raise
            return stream.events(first)
        raise refused or APIError(503, "no worker could take the request; try again shortly", code="no_worker_ready")


_END = object()  # the worker's stream ended normally
_LOST = object()  # the connection broke or the pump was cancelled


class WorkerStream:
    """One request on one worker. A task (the pump) reads the NDJSON lines into a queue, so that the health
    loop can cancel it when the worker stops answering and the reader sees `WorkerLost` instead of hanging."""

    def __init__(self, client: httpx.AsyncClient, worker: Worker, req: GenerateRequest):
        self.worker = worker
        self.queue: asyncio.Queue = asyncio.Queue()
        self.finished = False  # saw `done` or `error`
        worker.outstanding += 1
        worker.served += 1
        self.task = asyncio.create_task(self._pump(client, req))
        worker.streams.add(self.task)
        self.task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task) -> None:
        self.worker.streams.discard(task)
        self.worker.outstanding -= 1

    async def _pump(self, client: httpx.AsyncClient, req: GenerateRequest) -> None:
        outcome: object = _LOST
        try:
            async with client.stream("POST", f"{self.worker.url}/generate", content=req.model_dump_json(),
                                     headers=_JSON) as response:
                if response.status_code != 200:
                    outcome = _worker_error(response.status_code, await response.aread())
                    return
                async for line in response.aiter_lines():
                    if line:
                        self.queue.put_nowait(line)
            outcome = _END
        except httpx.TransportError as exc:
            self.worker.mark_down(f"{type(exc).__name__} on /generate")
        except httpx.HTTPError as exc:
            log.warning("stream from %s failed: %s", self.worker.url, exc)
        finally:
            self.queue.put_nowait(outcome)

    async def next(self) -> WorkerEvent | None:
        """The next event; None after `done`/`error`. Raises WorkerLost (also for a stream that ends without
        either) or the worker's refusal (APIError)."""
        item = await self.queue.get()
        if item is _END:
            if not self.finished:
                raise WorkerLost
            return None
        if item is _LOST:
            raise WorkerLost
        if isinstance(item, APIError):
            raise item
        try:
            event = WorkerEvent.model_validate_json(item)
        except ValueError as exc:
            self.close()
            raise WorkerLost from exc
        self.finished = event.type in ("done", "error")
        return event

    async def events(self, first: WorkerEvent) -> AsyncIterator[WorkerEvent]:
        try:
            yield first
            while (event := await self.next()) is not None:
                yield event
        except WorkerLost:
            yield WorkerEvent(type="error", status=502,
                              message="the worker serving this request stopped answering; the output is incomplete")
        finally:
            self.close()

    def close(self) -> None:
        self.task.cancel()


def _worker_error(status: int, body: bytes) -> APIError:
    try:
        err = json.loads(body)["error"]
        return APIError(status, err["message"], err.get("param"), err.get("code"))
    except (ValueError, KeyError, TypeError):
        return APIError(502 if status >= 500 else status, "the worker refused the request")
