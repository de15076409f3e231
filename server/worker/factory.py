"""Building a worker from settings: the backend and its model info (in the engine core process), and what
the front needs beside them (tokenizer, image processor)."""

from __future__ import annotations

from typing import Any

from ..config import Settings
from . import loader
from .backend import Backend
from .inputs import ModelInfo
from .torch.engine import Engine, EngineConfig
from .torch.scheduler import SchedulerConfig


def served_name(settings: Settings) -> str:
    return settings.served_model_name or loader.default_model_name(settings.model)


def build_backend(settings: Settings) -> tuple[Backend, ModelInfo]:
    """The engine core's backend for these settings, and the model info the front and gateway see."""
    if settings.backend == "vllm":
        from .vllm.build import build_vllm
        return build_vllm(settings, served_name(settings))
    engine = build_engine(settings)
    amateur = loader.default_model_name(settings.amateur) if settings.amateur else None
    return engine, model_info(engine, served_name(settings), amateur)


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
                     amateur_num_layers=amateur_layers, is_vision=engine.runner.is_vision,
                     backend="torch", features=engine.features)


def front_parts(settings: Settings, info: ModelInfo) -> tuple[Any, Any]:
    """The tokenizer and (vision models) the image processor, loaded in the worker's front process."""
    from transformers import AutoConfig, AutoTokenizer
    path = loader.resolve(settings.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    vision = None
    if info.is_vision:
        from .vision import VisionProcessor
        vision = VisionProcessor.load(path, AutoConfig.from_pretrained(path))
    return tokenizer, vision


def build_worker_app(settings: Settings):
    """The worker: its engine core process (started now, the model loaded there) and the front's app."""
    from .app import create_app
    from .core import EngineClient
    client = EngineClient.start(settings)
    tokenizer, vision = front_parts(settings, client.info)
    return create_app(client, settings, tokenizer, vision)
