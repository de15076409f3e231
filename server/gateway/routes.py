"""The OpenAI-compatible routes: parse, hand to a worker, return JSON or an SSE stream."""

from __future__ import annotations

import inspect
import json
import time
import uuid

from counterpoint.decoders import REGISTRY
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse

from .. import experiments
from ..errors import APIError
from ..protocol.chat import ChatCompletionRequest
from ..protocol.completions import CompletionRequest
from .deps import Authorized, OutcomesDep, PoolDep, SettingsDep
from .images import request_images
from .observe import Observation
from .responses import StreamFailed, chat_chunks, chat_response, completion_chunks, completion_response

router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Authorized])


def _decoding_header(spec) -> dict[str, str]:
    return {"x-counterpoint-decoding": json.dumps(spec.model_dump(), separators=(",", ":"))}


def _stream(chunks, headers: dict[str, str]) -> EventSourceResponse:
    return EventSourceResponse(chunks, headers=headers, sep="\n", ping=15)


@v1.post("/chat/completions")
async def chat_completions(req: ChatCompletionRequest, pool: PoolDep, settings: SettingsDep,
                           outcomes: OutcomesDep) -> Response:
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    with Observation(rid, req.model, outcomes).failures() as obs:
        parts = req.image_parts()
        images = await request_images(parts, settings, pool.models().get(req.model)) if parts else []
        gen = experiments.to_worker(req, rid, settings.experiments, images=images)
        obs.resolved(gen.decoding)
        events = obs.watch(await pool.open(gen))
        headers = _decoding_header(gen.decoding)
        if req.stream:
            return _stream(chat_chunks(req, rid, created, events), headers)
        try:
            body = await chat_response(req, rid, created, events)
        except StreamFailed as exc:
            raise APIError(exc.event.status, exc.event.message or "generation failed") from exc
        return JSONResponse(body, headers=headers)


@v1.post("/completions")
async def completions(req: CompletionRequest, pool: PoolDep, settings: SettingsDep,
                      outcomes: OutcomesDep) -> Response:
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    with Observation(rid, req.model, outcomes).failures() as obs:
        gens = experiments.to_worker(req, rid, settings.experiments)
        obs.resolved(gens[0].decoding)
        streams = [obs.watch(await pool.open(g), i) for i, g in enumerate(gens)]
        headers = _decoding_header(gens[0].decoding)
        if req.stream:
            return _stream(completion_chunks(req, rid, created, streams), headers)
        try:
            body = await completion_response(req, rid, created, streams)
        except StreamFailed as exc:
            raise APIError(exc.event.status, exc.event.message or "generation failed") from exc
        return JSONResponse(body, headers=headers)


@v1.get("/models")
async def list_models(pool: PoolDep) -> dict:
    created = int(time.time())
    data = [{"id": mid, "object": "model", "created": created, "owned_by": "counterpoint", **info}
            for mid, info in pool.models().items()]
    return {"object": "list", "data": data}


@v1.get("/methods")
async def list_methods(settings: SettingsDep, outcomes: OutcomesDep) -> dict:
    """Every decoding method with its parameters' JSON schema, the A/B experiments, and whether feedback is kept."""
    data = [{"id": name, "object": "decoding_method", "description": method_summary(cls),
             "parameters": cls.Params.model_json_schema()} for name, cls in sorted(REGISTRY.items())]
    exps = [{"id": name, "arms": [arm.model_dump() for arm in spec.arms]} for name, spec in settings.experiments.items()]
    return {"object": "list", "data": data, "experiments": exps, "feedback": outcomes is not None}


def method_summary(cls) -> str:
    """The first line of the method's module docstring: its name, idea and paper."""
    doc = inspect.getmodule(cls).__doc__ or ""
    return doc.strip().split("\n")[0]


@router.get("/health")
async def health(pool: PoolDep) -> Response:
    ready = any(w.healthy for w in pool.workers)
    return JSONResponse({"status": "ok" if ready else "no_worker_ready",
                         "workers": [{"url": w.url, "healthy": w.healthy, "outstanding": w.outstanding}
                                     for w in pool.workers]}, status_code=200 if ready else 503)


@router.get("/metrics")
async def prometheus() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
