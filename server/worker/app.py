"""The worker's front: its small HTTP API, POST /generate (NDJSON stream), GET /info, /health, /metrics.

Order of work for a request, cheapest first, so its cost is paid by itself before it touches shared state:
the internal token (when configured), the bounded queue (429 with Retry-After), then tokenization, the
decoder and its views, built once per request in a small thread pool off the event loop, then the length
checks; only then do its choices reach the engine core (core.py), which runs in its own process.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.background import BackgroundTask

from ..config import Settings
from ..errors import INTERNAL_TOKEN_HEADER, APIError, install_error_handlers
from ..worker_protocol import GenerateRequest, WorkerEvent
from . import metrics
from .backend import EngineRequest, resolve_views
from .core import EngineClient, GenerationFailed
from .inputs import ModelInfo, check_lengths, make_decoder, prompt_ids
from .vision import VisionProcessor, request_media

log = logging.getLogger(__name__)


@dataclass
class WorkerState:
    core: EngineClient
    info: ModelInfo
    settings: Settings
    tokenizer: object
    vision: VisionProcessor | None = None  # vision-language models: the processor that places image tokens
    num_admitted: int = 0  # groups accepted by /generate whose stream has not ended (running or waiting)
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="prepare"))


class Admission:
    """A request's place in the worker's bounded queue, taken before any work and released once (idempotent)."""

    def __init__(self, state: WorkerState, num_groups: int):
        waiting = state.num_admitted - state.core.stats.num_running
        if waiting >= state.settings.max_waiting:
            raise APIError(429, f"the worker's queue is full ({waiting} requests waiting); retry shortly",
                           code="queue_full", headers={"Retry-After": str(state.settings.retry_after)})
        self.state, self.num_groups = state, num_groups
        state.num_admitted += num_groups

    def release(self) -> None:
        self.state.num_admitted -= self.num_groups
        self.num_groups = 0


def create_app(core: EngineClient, settings: Settings, tokenizer, vision: VisionProcessor | None = None) -> FastAPI:
    state = WorkerState(core, core.info, settings, tokenizer, vision)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        core.attach(asyncio.get_running_loop())
        yield
        core.stop()
        state.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="counterpoint worker", lifespan=lifespan)
    app.state.worker = state
    install_error_handlers(app, retry_after=settings.retry_after)
    internal = [Depends(_internal_token(settings.internal_token))]

    @app.get("/health")
    async def health() -> Response:
        s = core.stats
        return JSONResponse({"status": "engine_stopped" if core.dead else "ok", "running": s.num_running,
                             "waiting": s.num_waiting, "kv_cache_usage": s.kv_cache_usage},
                            status_code=503 if core.dead else 200)

    @app.get("/info", dependencies=internal)
    async def info() -> dict:
        return {"models": [state.info.as_dict()]}

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.observe_engine(core.stats)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/generate", dependencies=internal)
    async def generate(req: GenerateRequest) -> StreamingResponse:
        if req.model != state.info.name:
            raise APIError(404, f"The model {req.model!r} does not exist on this worker.", "model", "model_not_found")
        admission = Admission(state, req.sampling.n)  # 429 when the queue is full, before any work
        try:
            ids, requests = await asyncio.get_running_loop().run_in_executor(state.pool, _prepare, state, req)
        except BaseException:
            admission.release()
            raise
        return StreamingResponse(_stream(state, req, ids, requests, admission), media_type="application/x-ndjson",
                                 background=BackgroundTask(admission.release))  # also when never iterated

    return app


def _prepare(state: WorkerState, req: GenerateRequest) -> tuple[list[int], list[EngineRequest]]:
    """Prompt ids and one engine request per choice (in the thread pool): tokenization, the decoder and its
    views happen once per request; every choice gets its own copy of the decoder's state."""
    with_images = request_media(req, state.vision, state.info.name)
    ids, media = with_images if with_images else (prompt_ids(req, state.tokenizer, state.info), None)
    decoder = make_decoder(req, ids, state.tokenizer, state.info, 0, media)
    check_lengths(req, decoder, state.info)
    views, first = resolve_views(decoder), decoder.detached()
    decoders = [first] + [first.for_choice() for _ in range(req.sampling.n - 1)]
    return ids, [EngineRequest(f"{req.request_id}-{i}", i, d, views, req.sampling, req.decoding.diagnostics)
                 for i, d in enumerate(decoders)]


def _internal_token(token: str | None):
    def check(request: Request) -> None:
        if token and not hmac.compare_digest(request.headers.get(INTERNAL_TOKEN_HEADER, "").encode(),
                                             token.encode()):
            raise APIError(401, "this worker only answers its gateway (missing or wrong internal token)",
                           code="invalid_internal_token")
    return check


def _texts(tokenizer, token_ids: list[int] | None) -> list[str] | None:
    return [tokenizer.decode([t]) for t in token_ids] if token_ids is not None else None


def _line(event: WorkerEvent) -> str:
    return event.model_dump_json(exclude_defaults=True) + "\n"


async def _stream(state: WorkerState, req: GenerateRequest, ids: list[int], requests: list[EngineRequest],
                  admission: Admission) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.request_deadline
    start = WorkerEvent(type="start", prompt_tokens=len(ids), token_ids=ids, decoding=req.decoding)
    if req.echo:
        start.prompt_text = state.tokenizer.decode(ids)
    decided = dict(req.decoding.decided)
    completion_tokens, started = 0, False
    outputs = state.core.generate(requests)
    try:
        while True:
            try:
                item = await asyncio.wait_for(anext(outputs), timeout=max(0.0, deadline - loop.time()))
            except StopAsyncIteration:
                break
            except TimeoutError:
                yield _line(WorkerEvent(type="error", status=504, message="the request ran past its deadline of "
                                        f"{state.settings.request_deadline:g} seconds"))
                return
            except GenerationFailed as exc:  # only our own failure messages reach the client
                yield _line(WorkerEvent(type="error", message=f"generation failed: {exc}", status=500))
                return
            if item.decided is not None and item.index == 0:
                decided = item.decided
            if not started:  # prompt logprobs come with the first output of choice 0's prefill
                started = True
                start.prompt_logprobs = item.prompt_logprobs
                start.decoding = req.decoding.model_copy(update={"decided": decided})
                yield _line(start)
            if item.finish_reason is not None:
                completion_tokens += item.num_generated
            yield _line(WorkerEvent(type="delta", index=item.index, text=item.text, token_ids=item.token_ids,
                                    logprobs=item.logprobs, finish_reason=item.finish_reason,
                                    changed=item.changed, divergence=item.divergence, own_token_ids=item.own_token_ids,
                                    own_tokens=_texts(state.tokenizer, item.own_token_ids)))
        yield _line(WorkerEvent(type="done", prompt_tokens=len(ids), completion_tokens=completion_tokens,
                                decoding=req.decoding.model_copy(update={"decided": decided})))
    finally:
        admission.release()
        await outputs.aclose()  # aborts the choices still running and frees their blocks
