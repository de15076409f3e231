"""Building a `--backend vllm` worker: vLLM's engine, the same worker app, and the methods it can run.

Methods outside `vllm_backend.METHODS` (dola, scmoe, contrastive_search, cd and lol with an amateur model) need
the PyTorch engine's per-layer logits, per-row routing or a second model in the same step; they answer 400
naming the torch backend before anything reaches the engine. `/info` lists only the methods this worker runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ...config import Settings
from ...errors import APIError
from ..async_engine import AsyncEngine, EngineFailure
from ..inputs import ModelInfo
from .backend import METHODS, PAIRED, GroupFailure, VLLMEngine


@dataclass
class VLLMModelInfo(ModelInfo):
    def as_dict(self) -> dict:
        d = super().as_dict()
        d["methods"] = [m for m in d["methods"] if m in METHODS]
        d["backend"] = "vllm"
        return d


class VLLMAsyncEngine(AsyncEngine):
    """`AsyncEngine` that turns a `GroupFailure` into that group's error event."""

    def _deliver(self, outputs: list) -> None:
        for out in outputs:
            q = self._queues.get(out.group_id)
            if q is not None:
                q.put_nowait(EngineFailure(out.message) if isinstance(out, GroupFailure) else out)


def refusal(body: dict) -> APIError | None:
    """The 400 for a request this backend cannot run soundly, or None."""
    decoding = body.get("decoding") or {}
    method = decoding.get("method", "plain")
    if method not in METHODS:
        return APIError(400, f"decoding method {method!r} is not available on the vllm backend (it runs "
                             f"{', '.join(METHODS)}); serve this model with `--backend torch` for it", "decoding")
    if method in PAIRED and (body.get("sampling") or {}).get("prompt_logprobs") is not None:
        return APIError(400, f"prompt logprobs (echo scoring) with {method} need the torch backend", "decoding")
    return None


def engine_args(settings: Settings, path: str):
    from transformers import AutoConfig
    from vllm.engine.arg_utils import EngineArgs

    from .logits import PairedLogitsProcessor
    # Without chunked prefill a whole prompt is one step's work: the step budget must hold the longest prompt.
    length = settings.max_model_len or getattr(AutoConfig.from_pretrained(path).get_text_config(),
                                               "max_position_embeddings", 2048)
    return EngineArgs(model=path, tokenizer=path, dtype=settings.dtype, enforce_eager=True,
                      enable_prefix_caching=False, enable_chunked_prefill=False, async_scheduling=False,
                      max_model_len=settings.max_model_len, max_num_seqs=settings.max_num_seqs,
                      max_num_batched_tokens=max(settings.max_num_batched_tokens, length),
                      logits_processors=[PairedLogitsProcessor], seed=0)


def build_engine(settings: Settings) -> VLLMEngine:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the logits processor shares memory with the backend
    if settings.device == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(settings.kv_cache_gb))))
    from transformers import AutoTokenizer, GenerationConfig
    from vllm.v1.engine.llm_engine import LLMEngine

    from .. import loader
    if settings.amateur:
        raise SystemExit("the vllm backend serves one model; cd/lol with an amateur need --backend torch")
    path = str(loader.resolve(settings.model))
    llm = LLMEngine.from_engine_args(engine_args(settings, path))
    cfg = llm.model_config
    tokenizer = AutoTokenizer.from_pretrained(path)
    try:  # as the PyTorch engine: the generation config's EOS, else the config's, else the tokenizer's
        eos = GenerationConfig.from_pretrained(path).eos_token_id
    except OSError:
        eos = cfg.hf_config.eos_token_id
    eos = eos if eos is not None else tokenizer.eos_token_id
    eos_ids = frozenset(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return VLLMEngine(llm, tokenizer, cfg.max_model_len, cfg.get_vocab_size(), eos_ids)


def model_info(engine: VLLMEngine, name: str) -> VLLMModelInfo:
    hf = engine.llm.model_config.hf_config.get_text_config()
    sched = engine.llm.vllm_config.cache_config
    blocks = getattr(sched, "num_gpu_blocks", None) or 0
    capacity = blocks * (sched.block_size or 16) or engine.max_model_len * 8
    return VLLMModelInfo(name=name, max_model_len=engine.max_model_len, vocab_size=engine.vocab_size,
                         num_layers=hf.num_hidden_layers, is_moe=False, capacity_tokens=capacity,
                         tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
                         eos_token_ids=tuple(sorted(engine.eos_token_ids)))


def build_vllm_worker_app(settings: Settings) -> FastAPI:
    from .. import loader
    from ..app import create_app
    engine = build_engine(settings)
    app = create_app(engine, model_info(engine, settings.served_model_name or loader.default_model_name(settings.model)))
    app.state.worker.engine = VLLMAsyncEngine(engine)

    @app.middleware("http")
    async def refuse(request: Request, call_next):
        if request.method == "POST" and request.url.path == "/generate":
            try:
                exc = refusal(json.loads(await request.body()))
            except (ValueError, AttributeError):
                exc = None  # malformed bodies get the app's own 422
            if exc is not None:
                return JSONResponse(exc.body(), status_code=exc.status)
        return await call_next(request)

    return app
