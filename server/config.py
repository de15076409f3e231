"""Settings for every counterpoint process: one pydantic-settings class.

Sources, highest first: command-line options, `COUNTERPOINT_*` environment variables, the TOML file given
with `--config`, then the defaults below.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from .experiments import Experiment

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("config_file", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COUNTERPOINT_", extra="forbid")

    host: str = "127.0.0.1"  # where the gateway listens
    port: int = 8000
    model: str = "smollm2"  # a Hugging Face folder, a .gguf file, or a built-in alias
    served_model_name: str | None = None  # the id clients use; default: derived from `model`
    amateur: str | None = None  # a smaller model for contrastive decoding (cd, lol), served beside `model`
    dtype: str = "auto"  # weights and KV cache: "auto" = bfloat16 on a GPU that has it, else float32
    device: str = "cpu"  # torch device: "cpu", "cuda", "cuda:1", ...
    api_key: str | None = None  # when set, every /v1 request needs `Authorization: Bearer <key>`
    workers: int = Field(1, ge=1)  # worker processes `serve` starts
    worker_urls: list[str] = Field(default_factory=list)  # for `gateway`: the workers to route to
    worker_dns: list[str] = Field(default_factory=list)  # for `gateway`: NAME:PORT resolving to every worker
    health_interval: float = Field(2.0, gt=0)  # gateway: seconds between worker health checks
    worker_host: str = "127.0.0.1"  # where workers started by `serve` listen
    worker_port: int = 8100  # the first worker's port; the next ones count up
    kv_cache_gb: float | None = Field(None, gt=0)  # KV cache memory per worker; None: 1 GiB on CPU, on a GPU
    #   what `gpu_memory_utilization` leaves after the weights
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)  # share of the GPU's memory a worker may use
    max_model_len: int | None = None  # context length; default: the model's
    max_num_seqs: int = Field(64, ge=1)  # rows (views) per forward
    max_num_batched_tokens: int = Field(512, ge=16)  # new tokens per forward (longer prompts are chunked)
    enable_prefix_caching: bool = True  # reuse computed prompt blocks across requests (torch backend)
    max_body_bytes: int = Field(8 << 20, ge=1024)  # larger request bodies get 413
    request_timeout: float = Field(600.0, gt=0)  # gateway -> worker, seconds
    threads: int | None = None  # torch intra-op threads in a worker; default: all cores
    backend: Literal["torch", "vllm"] = "torch"  # worker engine: ours (PyTorch) or vLLM's (needs the vllm extra)
    experiments: dict[str, Experiment] = Field(default_factory=dict)  # A/B experiments by name
    outcome_log: str | None = None  # SQLite path or postgresql:// URL: one row per completion; None = off
    # ---- limits (each refused with an OpenAI-style 400 unless noted) ----
    max_messages: int = Field(512, ge=1)  # chat messages per request
    max_content_parts: int = Field(64, ge=1)  # content parts per message
    max_prompts: int = Field(64, ge=1)  # prompts per /v1/completions request
    max_tokens_cap: int = Field(32768, ge=1)  # max_tokens / max_completion_tokens / min_tokens at most
    max_n: int = Field(16, ge=1)  # choices per request
    max_stop: int = Field(16, ge=0)  # stop strings per request
    max_stop_length: int = Field(256, ge=1)  # characters per stop string
    max_stop_token_ids: int = Field(64, ge=0)  # stop_token_ids per request
    max_image_bytes: int = Field(10 << 20, ge=1)  # decoded image bytes (data URL or fetched)
    max_image_pixels: int = Field(4096 * 4096, ge=1)  # width x height of one image
    # ---- overload and faults ----
    max_waiting: int = Field(256, ge=1)  # requests waiting in a worker's queue; past it, 429 with Retry-After
    retry_after: int = Field(1, ge=1)  # seconds suggested in Retry-After
    request_deadline: float = Field(600.0, gt=0)  # a worker ends a request after this many seconds (504)
    shutdown_grace: float = Field(30.0, ge=0)  # SIGTERM: seconds to drain in-flight requests before exiting
    # ---- security ----
    api_key_file: Path | None = None  # keys, one per line (# comments), accepted like api_key
    internal_token: str | None = None  # shared gateway <-> worker secret; required by a non-loopback worker
    fetch_allow_private: bool = False  # image URL fetching may reach private/loopback addresses (never metadata)
    fetch_timeout: float = Field(10.0, gt=0)  # seconds for a whole image fetch, redirects included
    fetch_max_redirects: int = Field(3, ge=0)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, **_: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        if _CONFIG_FILE.get() is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_CONFIG_FILE.get()))
        return tuple(sources)


WORKER_FIELDS = ("max_tokens_cap", "max_waiting", "retry_after", "request_deadline", "shutdown_grace",
                 "internal_token", "max_num_seqs", "max_num_batched_tokens", "max_body_bytes", "enable_prefix_caching")


def worker_env(settings: Settings, environ: dict[str, str]) -> dict[str, str]:
    """`environ` plus the settings a worker started by `serve` must share with the gateway, as variables."""
    env = dict(environ)
    for name in WORKER_FIELDS:
        value = getattr(settings, name)
        if value is not None:
            env[f"COUNTERPOINT_{name.upper()}"] = str(value)
    return env


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Settings from options (`overrides`; None means not given), environment, then the TOML file."""
    token = _CONFIG_FILE.set(Path(config_file) if config_file else None)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _CONFIG_FILE.reset(token)
