"""Tiny random vision-language models (LLaVA, Idefics3) built offline with the SmolLM2 tokenizer, and test images."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_image(seed: int = 0, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A real picture: coloured shapes on a gradient, different per seed."""
    g = torch.Generator().manual_seed(seed)
    colours = [tuple(int(c) for c in torch.randint(0, 256, (3,), generator=g)) for _ in range(4)]
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w // 8, h // 8, w // 2, h // 2), fill=colours[0])
    draw.rectangle((w // 2, h // 3, w - 4, h - 4), fill=colours[1])
    draw.polygon([(2, h - 2), (w // 3, h // 2), (w // 2, h - 2)], fill=colours[2])
    return image


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    mime = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}[fmt]
    return f"data:image/{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def _vision_tokenizer(tokenizer, tokens: list[str]):
    tok = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    tok.add_special_tokens({"additional_special_tokens": tokens})
    return tok


def _spread(model, projector: torch.nn.Module, projector_scale: float = 8.0) -> None:
    with torch.no_grad():  # logits spread enough that greedy choices are far from ties, and images that matter
        model.get_input_embeddings().weight.normal_(0, 1.0)
        model.get_output_embeddings().weight.normal_(0, 0.5)
        for p in projector.parameters():
            p.mul_(projector_scale)
        for name, p in model.named_parameters():
            if "vision" not in name and ("o_proj" in name or "v_proj" in name):
                p.mul_(6.0)  # attention (to the image) moves the logits as much as the last token does


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory, default_model_dir, tokenizer) -> Path:
    """A 2-layer random LLaVA (CLIP tower 30x30, patch 6: 25 image tokens) with an offline LlavaProcessor."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    tok = _vision_tokenizer(tokenizer, ["<image>"])
    image_processor = CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=6,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=30, patch_size=6, projection_dim=32)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(4)
    model = LlavaForConditionalGeneration(config)
    _spread(model, model.model.multi_modal_projector)
    path = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def llava_worker(tiny_llava_dir):
    """A live worker serving the tiny LLaVA as "tiny-llava"."""
    from counterpoint.server.config import Settings
    from counterpoint.server.worker.factory import build_worker_app

    from tests.conftest import ThreadServer
    app = build_worker_app(Settings(model=str(tiny_llava_dir), served_model_name="tiny-llava", kv_cache_gb=0.02))
    with ThreadServer(app) as server:
        yield server


@pytest.fixture(scope="session")
def vision_gateway(llava_worker, tiny_worker):
    """A gateway in front of the LLaVA worker and the text-only tiny Llama worker."""
    from counterpoint.server.config import Settings
    from counterpoint.server.gateway.app import create_app

    from tests.conftest import ThreadServer
    with ThreadServer(create_app(Settings(worker_urls=[llava_worker.url, tiny_worker.url]))) as server:
        yield server


@pytest.fixture()
def vision_client(vision_gateway):
    import httpx
    with httpx.Client(base_url=vision_gateway.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def tiny_idefics3_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer random Idefics3 (SmolVLM's architecture: SigLIP-style tower 48x48, patch 8, pixel shuffle 2:
    9 image tokens per image, no image splitting) with an offline Idefics3Processor."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )
    tok = _vision_tokenizer(tokenizer, ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"])
    image_processor = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": 48},
                                             max_image_size={"longest_edge": 48})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=9,
                                  chat_template=CHAT_TEMPLATE)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    vision = Idefics3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=48, patch_size=8)
    config = Idefics3Config(vision_config=vision.to_dict(), text_config=text.to_dict(), scale_factor=2,
                            image_token_id=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(5)
    model = Idefics3ForConditionalGeneration(config)
    _spread(model, model.model.connector, projector_scale=40.0)
    path = tmp_path_factory.mktemp("tiny-idefics3")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
