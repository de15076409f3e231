"""Settings for every counterpoint process: one pydantic-settings class.

Sources, highest first: command-line options, `COUNTERPOINT_*` environment variables, the TOML file given
with `--config`, then the defaults below.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("config_file", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COUNTERPOINT_", extra="forbid")

    host: str = "127.0.0.1"  # where the gateway listens
    port: int = 8000
    model: str = "smollm2"  # a Hugging Face folder, a .gguf file, or a built-in alias
    served_model_name: str | None = None  # the id clients use; default: derived from `model`
    amateur: str | None = None  # a smaller model for contrastive decoding (cd, lol), served beside `model`
    dtype: str = "float32"
    device: str = "cpu"
    api_key: str | None = None  # when set, every /v1 request needs `Authorization: Bearer <key>`
    workers: int = Field(1, ge=1)  # worker processes `serve` starts
    worker_urls: list[str] = Field(default_factory=list)  # for `gateway`: the workers to route to
    worker_host: str = "127.0.0.1"  # where workers started by `serve` listen
    worker_port: int = 8100  # the first worker's port; the next ones count up
    kv_cache_gb: float = Field(1.0, gt=0)  # KV cache memory per worker
    max_model_len: int | None = None  # context length; default: the model's
    max_num_seqs: int = Field(64, ge=1)  # rows (views) per forward
    max_num_batched_tokens: int = Field(4096, ge=16)  # new tokens per forward
    max_body_bytes: int = Field(8 << 20, ge=1024)  # larger request bodies get 413
    request_timeout: float = Field(600.0, gt=0)  # gateway -> worker, seconds
    threads: int | None = None  # torch intra-op threads in a worker; default: all cores
    image_max_bytes: int = Field(10 << 20, ge=1024)  # one image (data: URL or fetched), at most
    image_fetch_timeout: float = Field(10.0, gt=0)  # seconds for fetching one http(s) image, all hops together
    image_max_redirects: int = Field(3, ge=0)  # redirects followed when fetching an image
    image_allow_private: bool = False  # fetch images from loopback, private and link-local addresses too

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, **_: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        if _CONFIG_FILE.get() is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_CONFIG_FILE.get()))
        return tuple(sources)


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Settings from options (`overrides`; None means not given), environment, then the TOML file."""
    token = _CONFIG_FILE.set(Path(config_file) if config_file else None)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _CONFIG_FILE.reset(token)
