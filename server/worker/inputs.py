"""Turning a GenerateRequest into checked engine input: prompt tokens, a decoder, resolved limits.

Everything here runs before the engine sees the request, so a bad request is refused with a 400 and never
reaches the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from counterpoint.decoders import REGISTRY, Decoder, DecodingError, RequestContext, supported_methods
from counterpoint.decoders.base import FEATURES
from jinja2 import TemplateError
from pydantic import ValidationError
from transformers import PreTrainedTokenizerBase

from ..errors import APIError
from ..worker_protocol import GenerateRequest
from .vision import Media


@dataclass
class ModelInfo:
    """What the worker serves, as the gateway and the decoders see it."""

    name: str
    max_model_len: int
    vocab_size: int
    num_layers: int
    is_moe: bool
    capacity_tokens: int  # KV cache slots in all
    tie_word_embeddings: bool = False
    num_experts: int = 0  # MoE models: experts per layer
    eos_token_ids: tuple[int, ...] = ()
    amateur: str | None = None  # name of the amateur model served beside this one (cd, lol)
    amateur_num_layers: int = 0
    is_vision: bool = False  # a vision-language model: chat messages may hold images (vcd, ritual)
    backend: str = "torch"  # the engine that runs it: "torch" or "vllm"
    features: frozenset[str] = frozenset()  # what that backend offers (backend.ALL_FEATURES)

    def can_run(self, cls: type[Decoder]) -> bool:
        """Whether this model, on this backend, can run the method at all (listed in /v1/models)."""
        return cls.supports(self) and cls.needs <= self.features

    def as_dict(self) -> dict:
        methods = [m for m in supported_methods() if self.can_run(REGISTRY[m])]
        return {"id": self.name, "max_model_len": self.max_model_len, "methods": methods,
                "amateur": self.amateur, "vision": self.is_vision, "backend": self.backend}


def prompt_ids(req: GenerateRequest, tokenizer: PreTrainedTokenizerBase, info: ModelInfo) -> list[int]:
    if req.messages is not None:
        if not tokenizer.chat_template:
            raise APIError(400, f"model {info.name!r} has no chat template; use /v1/completions", "messages")
        return render_chat(tokenizer, req.messages, req.add_generation_prompt, "messages")
    if isinstance(req.prompt, str):
        return tokenizer(req.prompt)["input_ids"]
    if isinstance(req.prompt, list):
        bad = [t for t in req.prompt if not 0 <= t < info.vocab_size]
        if bad:
            raise APIError(400, f"token id {bad[0]} is outside the vocabulary (size {info.vocab_size})", "prompt")
        return list(req.prompt)
    raise APIError(400, "either prompt or messages is required", "prompt")


def make_decoder(req: GenerateRequest, ids: list[int], tokenizer: PreTrainedTokenizerBase, info: ModelInfo,
                 index: int = 0, media: Media | None = None) -> Decoder:
    cls = REGISTRY.get(req.decoding.method)
    if cls is None:
        raise APIError(400, f"unknown decoding method {req.decoding.method!r}; supported: "
                            f"{', '.join(supported_methods())}", "decoding")
    try:
        params = cls.Params(**req.decoding.params)
    except ValidationError as exc:
        raise APIError(400, f"invalid parameters for {cls.name}: {exc.errors()[0]['msg']}", "decoding") from exc
    seed = None if req.sampling.seed is None else req.sampling.seed + index
    tokenize = (lambda x: _tokenize(x, req, tokenizer)) if media is None else \
        (lambda x: media.tokenize(x, req.add_generation_prompt))
    ctx = RequestContext(prompt_ids=ids, model_info=info, messages=req.messages, prompt=req.prompt,
                         tokenize=tokenize, seed=seed, media=media)
    try:
        decoder = cls(params, ctx)
    except DecodingError as exc:
        raise APIError(400, str(exc), "decoding") from exc
    check_features(decoder, req, info)
    return decoder


def check_features(decoder: Decoder, req: GenerateRequest, info: ModelInfo) -> None:
    """A 400 when this request needs something the worker's backend does not offer."""
    needed = decoder.required_features()
    if req.sampling.prompt_logprobs is not None and len(decoder.views()) > 1:
        needed = needed | {"view_scoring"}
    missing = sorted(needed - info.features)
    if missing:
        raise APIError(400, f"decoding method {decoder.name!r} needs {', '.join(missing)} "
                            f"({'; '.join(FEATURES[m] for m in missing)}), which the {info.backend} backend "
                            f"does not offer; serve this model with `--backend torch` for it", "decoding")


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict], add_generation_prompt: bool,
                param: str) -> list[int]:
    """Chat messages -> prompt ids through the model's template; a 400 naming `param` if it cannot render them."""
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    except TemplateError as exc:  # a template may reject a message order (e.g. two system messages)
        raise APIError(400, f"the chat template rejected these messages: {exc.message or 'invalid'}", param) from exc
    except Exception as exc:  # no internals (paths, traces) in the answer
        raise APIError(400, "the chat template could not render these messages", param) from exc
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _tokenize(x: list[dict] | str, req: GenerateRequest, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Another view's prompt (a decoder's), rendered the way the request's own prompt was."""
    if isinstance(x, str):
        return tokenizer(x)["input_ids"]
    return render_chat(tokenizer, x, req.add_generation_prompt, "decoding")


def check_lengths(req: GenerateRequest, decoder: Decoder, info: ModelInfo) -> None:
    views = decoder.views()
    longest = max(len(v.prompt_ids) for v in views)
    if longest == 0:
        raise APIError(400, "the prompt is empty", "prompt")
    max_tokens = req.sampling.max_tokens
    if longest >= info.max_model_len or longest + (max_tokens or 0) > info.max_model_len:
        raise APIError(400, f"This model's maximum context length is {info.max_model_len} tokens. However, "
                            f"you requested {longest + (max_tokens or 0)} tokens ({longest} in the prompt, "
                            f"{max_tokens or 0} for the completion). Please reduce the length.", "max_tokens")
    need = sum(len(v.prompt_ids) for v in views) + len(views) * (max_tokens or info.max_model_len - longest)
    if need > info.capacity_tokens:
        raise APIError(400, f"the request needs {need} KV cache slots but the worker has "
                            f"{info.capacity_tokens}; lower max_tokens", "max_tokens")
