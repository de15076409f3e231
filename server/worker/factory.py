"""Building a worker from settings: load the model, size the KV cache, create the engine and its app."""

from __future__ import annotations

from fastapi import FastAPI

from ..config import Settings
from . import loader
from .torch.engine import Engine, EngineConfig
from .inputs import ModelInfo
from .torch.scheduler import SchedulerConfig


def build_engine(settings: Settings) -> Engine:
    model, tokenizer = loader.load(settings.model, settings.dtype, settings.device)
    amateur = loader.load(settings.amateur, settings.dtype, settings.device)[0] if settings.amateur else None
    config = EngineConfig(kv_cache_bytes=int(settings.kv_cache_gb * (1 << 30)), max_model_len=settings.max_model_len,
                          scheduler=SchedulerConfig(settings.max_num_seqs, settings.max_num_batched_tokens))
    return Engine(model, tokenizer, config, amateur=amateur)


def model_info(engine: Engine, name: str, amateur_name: str | None = None) -> ModelInfo:
    cfg = engine.model.config.get_text_config()
    experts = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None) or 0
    amateur_layers = engine.amateur.config.get_text_config().num_hidden_layers if engine.amateur is not None else 0
    return ModelInfo(name=name, max_model_len=engine.max_model_len, vocab_size=engine.vocab_size,
                     num_layers=cfg.num_hidden_layers, is_moe=engine.runner.routing.is_moe,
                     capacity_tokens=engine.capacity_tokens,
                     tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
                     num_experts=experts, eos_token_ids=tuple(sorted(engine.eos_token_ids)),
                     amateur=amateur_name if engine.amateur is not None else None,
                     amateur_num_layers=amateur_layers, is_vision=engine.runner.is_vision)


def build_worker_app(settings: Settings) -> FastAPI:
    from .app import create_app
    if settings.backend == "vllm":
        from .vllm.app import build_vllm_worker_app
        return build_vllm_worker_app(settings)
    engine = build_engine(settings)
    name = settings.served_model_name or loader.default_model_name(settings.model)
    amateur_name = loader.default_model_name(settings.amateur) if settings.amateur else None
    vision = None
    if engine.runner.is_vision:
        from .vision import VisionProcessor
        vision = VisionProcessor.load(loader.resolve(settings.model), engine.model.config)
    return create_app(engine, model_info(engine, name, amateur_name), settings, vision)
