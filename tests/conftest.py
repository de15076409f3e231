"""Shared fixtures: tiny random-weight models built offline, the embedded tokenizer, and live servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The embedded SmolLM2 as a Hugging Face folder (converted from its GGUF once, then cached)."""
    from counterpoint.server.worker import loader
    return loader.resolve(loader.DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tokenizer(default_model_dir):
    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer random Llama with the real tokenizer, saved as a Hugging Face folder."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # logits spread enough that greedy choices are far from ties, yet not one-hot
        model.model.embed_tokens.weight.normal_(0, 1.0)
        model.lm_head.weight.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _save_tiny(path: Path, config, tokenizer, expert_scale: float = 1.0) -> Path:
    torch.manual_seed(config.num_hidden_layers * 7 + config.hidden_size)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # logits spread enough that greedy choices are far from ties, yet not one-hot
        model.get_input_embeddings().weight.normal_(0, 1.0)
        model.get_output_embeddings().weight.normal_(0, 0.5)
        for name, p in model.named_parameters():
            if "experts" in name or "gate" in name:
                p.mul_(expert_scale)  # experts that matter, so routing changes the logits
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_amateur_dir(tmp_path_factory, tokenizer) -> Path:
    """A small 2-layer random Llama sharing the tokenizer: the amateur for cd and lol."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    return _save_tiny(tmp_path_factory.mktemp("tiny-amateur"), config, tokenizer)


@pytest.fixture(scope="session")
def tiny_deep_dir(tmp_path_factory, tokenizer) -> Path:
    """A 6-layer random Llama (for layer contrasts: dola, cd layer:K, lol)."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    return _save_tiny(tmp_path_factory.mktemp("tiny-deep"), config, tokenizer)


@pytest.fixture(scope="session")
def tiny_moe_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer random Mixtral (4 experts, top-2) for scmoe."""
    from transformers import MixtralConfig
    config = MixtralConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                           num_experts_per_tok=2, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    return _save_tiny(tmp_path_factory.mktemp("tiny-moe"), config, tokenizer, expert_scale=30.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """An ASGI app served by uvicorn on a loopback port in a background thread."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="session")
def tiny_worker(tiny_llama_dir):
    """A live worker on the tiny Llama, served in-process."""
    from counterpoint.server.config import Settings
    from counterpoint.server.worker.factory import build_worker_app
    settings = Settings(model=str(tiny_llama_dir), served_model_name="tiny", kv_cache_gb=0.05)
    app = build_worker_app(settings)
    with ThreadServer(app) as server:
        server.app = app
        yield server


@pytest.fixture(scope="session")
def tiny_gateway(tiny_worker):
    """A live gateway in front of `tiny_worker`."""
    from counterpoint.server.config import Settings
    from counterpoint.server.gateway.app import create_app
    app = create_app(Settings(worker_urls=[tiny_worker.url]))
    with ThreadServer(app) as server:
        yield server


@pytest.fixture()
def gateway_client(tiny_gateway):
    with httpx.Client(base_url=tiny_gateway.url, timeout=60) as client:
        yield client


def start_serve(args: list[str], port: int, log: Path, env: dict | None = None,
                timeout: float = 300) -> subprocess.Popen:
    """`counterpoint serve` as a real subprocess (output to `log`); returns once /health answers 200."""
    out = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "counterpoint.server.cli", "serve", "--port", str(port), *args],
                            env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("serve did not become ready")
