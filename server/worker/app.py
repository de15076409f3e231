"""The worker's own small HTTP API: POST /generate (NDJSON stream), GET /info, /health, /metrics.

Guards at the door: a shared internal token when one is configured (required when the worker listens
beyond loopback), a bounded waiting queue (429 with Retry-After past it) and a per-request deadline (504).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.background import BackgroundTask

from ..config import Settings
from ..errors import INTERNAL_TOKEN_HEADER, APIError, install_error_handlers
from ..worker_protocol import GenerateRequest, WorkerEvent
from . import metrics
from .async_engine import AsyncEngine, GenerationFailed
from .torch.engine import Engine, StepOutput
from .inputs import ModelInfo, check_lengths, make_decoder, prompt_ids
from .vision import VisionProcessor, request_media

log = logging.getLogger(__name__)


@dataclass
class WorkerState:
    engine: AsyncEngine
    info: ModelInfo
    settings: Settings
    num_admitted: int = 0  # groups accepted by /generate whose stream has not ended (running or waiting)
    vision: VisionProcessor | None = None  # vision-language models: the processor that places image tokens


class Admission:
    """A request's place in the worker's bounded queue, taken before streaming and released once (idempotent)."""

    def __init__(self, state: WorkerState, num_groups: int):
        waiting = state.num_admitted - state.engine.num_running
        if waiting >= state.settings.max_waiting:
            raise APIError(429, f"the worker's queue is full ({waiting} requests waiting); retry shortly",
                           code="queue_full", headers={"Retry-After": str(state.settings.retry_after)})
        self.state, self.num_groups = state, num_groups
        state.num_admitted += num_groups

    def release(self) -> None:
        self.state.num_admitted -= self.num_groups
        self.num_groups = 0


def create_app(engine: Engine, info: ModelInfo, settings: Settings | None = None,
               vision: VisionProcessor | None = None) -> FastAPI:
    state = WorkerState(AsyncEngine(engine), info, settings or Settings(), vision=vision)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.engine.start()
        yield
        state.engine.stop()

    app = FastAPI(title="counterpoint worker", lifespan=lifespan)
    app.state.worker = state
    install_error_handlers(app, retry_after=state.settings.retry_after)
    internal = [Depends(_internal_token(state.settings.internal_token))]

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "running": state.engine.num_running, "waiting": state.engine.num_waiting,
                "kv_cache_usage": state.engine.engine.block_manager.usage}

    @app.get("/info", dependencies=internal)
    async def info() -> dict:
        return {"models": [state.info.as_dict()]}

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.observe_engine(state.engine)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/generate", dependencies=internal)
    async def generate(req: GenerateRequest) -> StreamingResponse:
        if req.model != state.info.name:
            raise APIError(404, f"The model {req.model!r} does not exist on this worker.", "model", "model_not_found")
        tokenizer = engine.tokenizer
        with_images = request_media(req, state.vision, state.info.name)
        ids, media = with_images if with_images else (prompt_ids(req, tokenizer, state.info), None)
        decoders = [make_decoder(req, ids, tokenizer, state.info, i, media) for i in range(req.sampling.n)]
        check_lengths(req, decoders[0], state.info)
        admission = Admission(state, len(decoders))  # 429 when the queue is full
        return StreamingResponse(_stream(state, req, ids, decoders, admission), media_type="application/x-ndjson",
                                 background=BackgroundTask(admission.release))  # also when never iterated

    return app


def _internal_token(token: str | None):
    def check(request: Request) -> None:
        if token and not hmac.compare_digest(request.headers.get(INTERNAL_TOKEN_HEADER, "").encode(),
                                             token.encode()):
            raise APIError(401, "this worker only answers its gateway (missing or wrong internal token)",
                           code="invalid_internal_token")
    return check


def _line(event: WorkerEvent) -> str:
    return event.model_dump_json(exclude_defaults=True) + "\n"


async def _stream(state: WorkerState, req: GenerateRequest, ids: list[int], decoders: list,
                  admission: Admission) -> AsyncIterator[str]:
    tokenizer = state.engine.engine.tokenizer
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.request_deadline
    start = WorkerEvent(type="start", prompt_tokens=len(ids), token_ids=ids, decoding=req.decoding)
    if req.echo:
        start.prompt_text = tokenizer.decode(ids)
    outputs: asyncio.Queue[StepOutput | Exception | None] = asyncio.Queue()
    tasks = [asyncio.create_task(_pump(state, req, i, d, outputs)) for i, d in enumerate(decoders)]
    completion_tokens, pending, started = 0, len(tasks), False
    try:
        while pending:
            try:
                item = await asyncio.wait_for(outputs.get(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                yield _line(WorkerEvent(type="error", status=504, message="the request ran past its deadline of "
                                        f"{state.settings.request_deadline:g} seconds"))
                return
            if item is None:
                pending -= 1
                continue
            if isinstance(item, Exception):  # only our own failure messages reach the client
                reason = str(item) if isinstance(item, GenerationFailed) else "the engine hit an error"
                yield _line(WorkerEvent(type="error", message=f"generation failed: {reason}", status=500))
                return
            if not started:  # prompt logprobs come with the first output of choice 0's prefill
                started = True
                start.prompt_logprobs = item.prompt_logprobs
                start.decoding = req.decoding.model_copy(update={"decided": decoders[0].report()})
                yield _line(start)
            if item.finish_reason is not None:
                completion_tokens += item.num_generated
            yield _line(WorkerEvent(type="delta", index=item.index, text=item.text, token_ids=item.token_ids,
                                    logprobs=item.logprobs, finish_reason=item.finish_reason,
                                    changed=item.changed, divergence=item.divergence, own_token_ids=item.own,
                                    own_tokens=[tokenizer.decode([t]) for t in item.own] if item.own else None))
        yield _line(WorkerEvent(type="done", prompt_tokens=len(ids), completion_tokens=completion_tokens,
                                decoding=req.decoding.model_copy(update={"decided": decoders[0].report()})))
    finally:
        admission.release()
        for t in tasks:  # cancelling a pump leaves its engine iteration, which aborts the group and frees its blocks
            t.cancel()


async def _pump(state: WorkerState, req: GenerateRequest, index: int, decoder, outputs: asyncio.Queue) -> None:
    group_id = f"{req.request_id}-{index}"
    try:
        async for out in state.engine.generate(group_id, lambda e: e.add(group_id, index, decoder, req.sampling, req.decoding.diagnostics)):
            outputs.put_nowait(out)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        outputs.put_nowait(exc)
    finally:
        outputs.put_nowait(None)
