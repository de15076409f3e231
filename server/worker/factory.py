"""Building a worker from settings: load the model, size the KV cache, create the engine and its app."""

from __future__ import annotations

from fastapi import FastAPI

from ..config import Settings
from . import loader
from .engine import Engine, EngineConfig
from .inputs import ModelInfo
from .scheduler import SchedulerConfig


def build_engine(settings: Settings) -> Engine:
    model, tokenizer = loader.load(settings.model, settings.dtype, settings.device)
    config = EngineConfig(kv_cache_bytes=int(settings.kv_cache_gb * (1 << 30)), max_model_len=settings.max_model_len,
                          scheduler=SchedulerConfig(settings.max_num_seqs, settings.max_num_batched_tokens))
    return Engine(model, tokenizer, config)


def model_info(engine: Engine, name: str) -> ModelInfo:
    cfg = engine.model.config.get_text_config()
    return ModelInfo(name=name, max_model_len=engine.max_model_len, vocab_size=engine.vocab_size,
                     num_layers=cfg.num_hidden_layers, is_moe=bool(getattr(cfg, "num_local_experts", 0)
                                                                   or getattr(cfg, "num_experts", 0)),
                     capacity_tokens=engine.capacity_tokens)


def build_worker_app(settings: Settings) -> FastAPI:
    from .app import create_app
    engine = build_engine(settings)
    name = settings.served_model_name or loader.default_model_name(settings.model)
    return create_app(engine, model_info(engine, name), settings)
