"""Vision decoding speed: per-token latency of vcd and ritual at batch 1 vs plain, and 8 concurrent image requests.

Builds a random-weight LLaVA offline (SmolLM2 tokenizer + `<image>`, CLIP tower, LlavaProcessor; `--size small`
is SmolLM2-135M-shaped text with a 224px / patch-14 tower: 256 image tokens per image), then drives the engine
directly (no HTTP), greedy, EOS ignored:
  1. batch 1: median decode-step latency (ms per generated token, prefill excluded) and prefill time;
  2. 8 concurrent requests with different images: aggregate generated tokens/s (prefill included).
Methods run interleaved `--repeats` times; the best of each is kept (noise on a shared machine only slows).
Prints a table and writes JSON (default benchmarks/results/vision.json).

    python benchmarks/vision.py [--size small|tiny] [--tokens 64] [--threads 2] [--device cpu] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

SIZES = {  # text (hidden, intermediate, layers, heads, kv heads); vision (hidden, layers, image size, patch)
    "tiny": {"text": (64, 128, 2, 4, 2), "vision": (32, 2, 30, 6)},
    "small": {"text": (576, 1536, 30, 9, 3), "vision": (256, 4, 224, 14)},
}


def build_llava(path: Path, size: str) -> None:
    from counterpoint.server.worker import loader
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    tok = AutoTokenizer.from_pretrained(loader.resolve(loader.DEFAULT_MODEL))
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    (h, inter, layers, heads, kv), (vh, vlayers, image_size, patch) = SIZES[size]["text"], SIZES[size]["vision"]
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
                "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}"
                "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                                                  crop_size={"height": image_size, "width": image_size}),
                               tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=template)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    vision = CLIPVisionConfig(hidden_size=vh, intermediate_size=4 * vh, num_hidden_layers=vlayers, num_attention_heads=4,
                              image_size=image_size, patch_size=patch)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)


def picture(seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    image = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for k in range(6):
        x, y = (int(v) for v in torch.randint(0, 280, (2,), generator=g))
        colour = tuple(int(c) for c in torch.randint(0, 256, (3,), generator=g))
        (draw.ellipse if k % 2 else draw.rectangle)((x, y % 200, x + 40, y % 200 + 40), fill=colour)
    return image


def add_request(engine, vision, info, gid: str, image, method: str, tokens: int) -> None:
    import base64
    import io

    from counterpoint.server.worker.inputs import make_decoder
    from counterpoint.server.worker.vision import request_media
    from counterpoint.server.worker_protocol import DecodingSpec, GenerateRequest, ImageInput, SamplingParams
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    req = GenerateRequest(request_id=gid, model="bench", images=[ImageInput(part="messages[0].content[0]",
                                                                          data=base64.b64encode(buf.getvalue()).decode())],
                          messages=[{"role": "user", "content": [{"type": "image"},
                                                                 {"type": "text", "text": "Describe this picture."}]}],
                          sampling=SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True, seed=1),
                          decoding=DecodingSpec(method=method))
    ids, media = request_media(req, vision, "bench")
    engine.add(gid, 0, make_decoder(req, ids, engine.tokenizer, info, 0, media), req.sampling)


def run(engine, vision, info, method: str, images: list, tokens: int) -> dict:
    for i, image in enumerate(images):
        add_request(engine, vision, info, f"{method}-{i}", image, method, tokens)
    step_times, generated, start = [], 0, time.perf_counter()
    while engine.has_work:
        t0 = time.perf_counter()
        outs = engine.step()
        if engine.runner.device.type == "cuda":
            torch.cuda.synchronize()
        step_times.append(time.perf_counter() - t0)
        generated += sum(len(o.token_ids) for o in outs)
    wall = time.perf_counter() - start
    return {"prefill_ms": step_times[0] * 1e3, "ms_per_token": statistics.median(step_times[1:]) * 1e3,
            "tokens_per_s": generated / wall, "generated": generated}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=list(SIZES), default="small")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/vision.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from counterpoint.server.config import Settings
    from counterpoint.server.worker.factory import build_engine, model_info
    from counterpoint.server.worker.vision import VisionProcessor
    with tempfile.TemporaryDirectory() as tmp:
        build_llava(Path(tmp), args.size)
        engine = build_engine(Settings(model=tmp, kv_cache_gb=0.5, device=args.device))
        vision = VisionProcessor.load(tmp, engine.model.config)
    info = model_info(engine, "bench")
    run(engine, vision, info, "plain", [picture(99)], 4)  # warm-up
    results = {"size": args.size, "tokens": args.tokens, "threads": args.threads, "device": args.device,
               "image_tokens": engine.model.config.vision_config.image_size ** 2
               // engine.model.config.vision_config.patch_size ** 2, "batch1": {}, "concurrent8": {}}
    for _ in range(args.repeats):  # interleaved repeats, best kept: a shared machine's noise only slows runs down
        for method in ("plain", "vcd", "ritual"):
            b1 = run(engine, vision, info, method, [picture(0)], args.tokens)
            c8 = run(engine, vision, info, method, [picture(i) for i in range(8)], args.tokens)
            best1, best8 = results["batch1"].get(method), results["concurrent8"].get(method)
            if best1 is None or b1["ms_per_token"] < best1["ms_per_token"]:
                results["batch1"][method] = b1
            if best8 is None or c8["tokens_per_s"] > best8["tokens_per_s"]:
                results["concurrent8"][method] = c8
    base = results["batch1"]["plain"]["ms_per_token"]
    print(f"LLaVA {args.size} random weights, {results['image_tokens']} image tokens, {args.tokens} tokens, "
          f"{args.threads} threads, {args.device}")
    print(f"{'method':8} {'ms/token b1':>12} {'vs plain':>9} {'prefill ms':>11} {'8 conc tok/s':>13}")
    for method in ("plain", "vcd", "ritual"):
        b1, c8 = results["batch1"][method], results["concurrent8"][method]
        b1["vs_plain"] = b1["ms_per_token"] / base
        print(f"{method:8} {b1['ms_per_token']:12.2f} {b1['vs_plain']:8.2f}x {b1['prefill_ms']:11.1f} "
              f"{c8['tokens_per_s']:13.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
