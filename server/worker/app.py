"""The worker's own small HTTP API: POST /generate (NDJSON stream), GET /info, /health, /metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import APIError
from ..worker_protocol import GenerateRequest, WorkerEvent
from . import metrics
from .async_engine import AsyncEngine
from .engine import Engine, StepOutput
from .inputs import ModelInfo, check_lengths, make_decoder, prompt_ids
from .vision import VisionProcessor, request_media

log = logging.getLogger(__name__)


@dataclass
class WorkerState:
    engine: AsyncEngine
    info: ModelInfo
    vision: VisionProcessor | None = None  # vision-language models: the processor that places image tokens


def create_app(engine: Engine, info: ModelInfo, vision: VisionProcessor | None = None) -> FastAPI:
    state = WorkerState(AsyncEngine(engine), info, vision)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.engine.start()
        yield
        state.engine.stop()

    app = FastAPI(title="counterpoint worker", lifespan=lifespan)
    app.state.worker = state

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "running": state.engine.num_running, "waiting": state.engine.num_waiting}

    @app.get("/info")
    async def info() -> dict:
        return {"models": [state.info.as_dict()]}

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.observe_engine(state.engine)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/generate")
    async def generate(req: GenerateRequest) -> StreamingResponse:
        if req.model != state.info.name:
            raise APIError(404, f"The model {req.model!r} does not exist on this worker.", "model", "model_not_found")
        tokenizer = engine.tokenizer
        with_images = request_media(req, state.vision, state.info.name)
        ids, media = with_images if with_images else (prompt_ids(req, tokenizer, state.info), None)
        decoders = [make_decoder(req, ids, tokenizer, state.info, i, media) for i in range(req.sampling.n)]
        check_lengths(req, decoders[0], state.info)
        return StreamingResponse(_stream(state, req, ids, decoders), media_type="application/x-ndjson")

    return app


def _line(event: WorkerEvent) -> str:
    return event.model_dump_json(exclude_defaults=True) + "\n"


async def _stream(state: WorkerState, req: GenerateRequest, ids: list[int], decoders: list) -> AsyncIterator[str]:
    tokenizer = state.engine.engine.tokenizer
    start = WorkerEvent(type="start", prompt_tokens=len(ids), token_ids=ids, decoding=req.decoding)
    if req.echo:
        start.prompt_text = tokenizer.decode(ids)
    outputs: asyncio.Queue[StepOutput | Exception | None] = asyncio.Queue()
    tasks = [asyncio.create_task(_pump(state, req, i, d, outputs)) for i, d in enumerate(decoders)]
    completion_tokens, pending, started = 0, len(tasks), False
    try:
        while pending:
            item = await outputs.get()
            if item is None:
                pending -= 1
                continue
            if isinstance(item, Exception):
                yield _line(WorkerEvent(type="error", message=str(item), status=500))
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
                                    changed=item.changed, divergence=item.divergence))
        yield _line(WorkerEvent(type="done", prompt_tokens=len(ids), completion_tokens=completion_tokens,
                                decoding=req.decoding.model_copy(update={"decided": decoders[0].report()})))
    finally:
        for t in tasks:
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

