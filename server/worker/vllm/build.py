"""Building the `--backend vllm` engine in the engine core process: vLLM's V1 engine and our model info.

The settings the backend needs (see backend.py's docstring) are set here: the engine core in this process,
chunked prefill, prefix caching and async scheduling off, eager mode, our paired logits processor.
"""

from __future__ import annotations

import os

from ...config import Settings
from ..inputs import ModelInfo
from .backend import VLLMEngine


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


def build_vllm(settings: Settings, name: str) -> tuple[VLLMEngine, ModelInfo]:
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
    engine = VLLMEngine(llm, tokenizer, cfg.max_model_len, cfg.get_vocab_size(), eos_ids)
    return engine, model_info(engine, name)


def model_info(engine: VLLMEngine, name: str) -> ModelInfo:
    hf = engine.llm.model_config.hf_config.get_text_config()
    cache = engine.llm.vllm_config.cache_config
    blocks = getattr(cache, "num_gpu_blocks", None) or 0
    capacity = blocks * (cache.block_size or 16) or engine.max_model_len * 8
    experts = getattr(hf, "num_local_experts", None) or getattr(hf, "num_experts", None) or 0
    return ModelInfo(name=name, max_model_len=engine.max_model_len, vocab_size=engine.vocab_size,
                     num_layers=hf.num_hidden_layers, is_moe=bool(experts), capacity_tokens=capacity,
                     tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)), num_experts=experts,
                     eos_token_ids=tuple(sorted(engine.eos_token_ids)), backend="vllm",
                     features=engine.features)
