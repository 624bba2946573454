#!/usr/bin/env python
"""Latency of one DAR search turn, stage by stage, on standard-size models with random weights.

Builds the product's architectures without downloading weights (open_clip ViT-B-32, a
Qwen2.5-1.5B-sized causal LM, an SD-Turbo-sized UNet/VAE/text encoder) and times, per turn:
text encode -> text-first search over N catalogue vectors -> LLM generate (48 tokens, static KV
cache) -> one 1-step image -> encode the image -> fused search. Random weights cost the same
FLOPs as trained ones, so the timings hold for real checkpoints.

    python scripts/gpu_turn.py                       # CUDA, 1M items, p50/p95 over 20 turns
    python scripts/gpu_turn.py --sessions 8          # plus 8 sessions batched per forward pass
    python scripts/gpu_turn.py --tiny --device cpu   # toy sizes: a smoke test anywhere
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = (
    "text_encode",
    "text_search",
    "llm_generate",
    "image_generate",
    "image_encode",
    "fused_search",
)
DIALOGUE = (
    "a red summer dress, is it long? yes, ankle length, does it have sleeves? no, "
    "what is the neckline? a v-neck, any pattern? small white flowers"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="toy model sizes (CPU smoke test)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--turns", type=int, default=20, help="timed turns")
    p.add_argument("--warmup", type=int, default=3, help="untimed turns first")
    p.add_argument("--items", type=int, default=None, help="catalogue vectors (1M; tiny 2000)")
    p.add_argument("--topk", type=int, default=100)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--prompt-tokens", type=int, default=256, help="LLM prompt length")
    p.add_argument("--size", type=int, default=None, help="image side (512; tiny 64)")
    p.add_argument("--sessions", type=int, default=1, help="also run N sessions batched")
    p.add_argument("--no-static-cache", action="store_true", help="dynamic KV cache instead")
    return p.parse_args(argv)


class Stopwatch:
    """Wall-clock per stage; synchronises CUDA so asynchronous kernels are counted."""

    def __init__(self, device: str) -> None:
        import torch

        self.sync: Callable[[], None] = (
            torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        )
        self.times: dict[str, list[float]] = defaultdict(list)

    def run(self, stage: str, fn: Callable[[], Any], record: bool) -> Any:
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        if record:
            self.times[stage].append(time.perf_counter() - start)
        return out


def build_clip(tiny: bool, device: str, dtype: Any) -> tuple[Any, Any]:
    import open_clip
    import torch

    from workers.models.offline import OPEN_CLIP_CONFIG

    cfg = OPEN_CLIP_CONFIG if tiny else open_clip.get_model_config("ViT-B-32")
    with torch.device(device):
        model = open_clip.CLIP(**cfg)
    return model.to(dtype).eval(), open_clip.get_tokenizer("ViT-B-32")


def build_llm(tiny: bool, device: str, dtype: Any) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sizes: dict[str, Any]
    if tiny:
        sizes = dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=2048,
        )
    else:  # Qwen2.5-1.5B-Instruct
        sizes = dict(
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            vocab_size=151936,
        )
    config = Qwen2Config(**sizes, max_position_embeddings=4096, tie_word_embeddings=True)
    with torch.device(device):  # initialise on the GPU: CPU init of 1.5B params takes minutes
        model = Qwen2ForCausalLM(config)
    return model.to(dtype).eval()


def build_sd(tiny: bool, device: str, dtype: Any) -> Any:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from workers.models.offline import tiny_sd_pipeline, turbo_pipeline

    if tiny:
        pipe = tiny_sd_pipeline()
    else:  # stabilityai/sd-turbo (SD 2.1 architecture, OpenCLIP-H text encoder)
        with torch.device(device):
            unet = UNet2DConditionModel(
                sample_size=64,
                layers_per_block=2,
                cross_attention_dim=1024,
                block_out_channels=(320, 640, 1280, 1280),
                attention_head_dim=(5, 10, 20, 20),
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                use_linear_projection=True,
            )
            vae = AutoencoderKL(
                block_out_channels=(128, 256, 512, 512),
                layers_per_block=2,
                latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                sample_size=768,
            )
            text = CLIPTextModel(
                CLIPTextConfig(
                    hidden_size=1024,
                    intermediate_size=4096,
                    num_hidden_layers=23,
                    num_attention_heads=16,
                    hidden_act="gelu",
                    projection_dim=512,
                )
            )
        pipe = turbo_pipeline(vae, text, unet)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


class Turn:
    """One DAR turn for a batch of sessions (batch 1 = a single session)."""

    def __init__(self, args: argparse.Namespace, device: str, dtype: Any) -> None:
        import torch

        self.args, self.device = args, device
        self.clip, self.tokenizer = build_clip(args.tiny, device, dtype)
        self.llm = build_llm(args.tiny, device, dtype)
        self.pipe = build_sd(args.tiny, device, dtype)
        dim = int(self.clip.text_projection.shape[1])
        gen = torch.Generator(device=device).manual_seed(0)
        items = torch.randn(args.items, dim, device=device, generator=gen)
        self.items = torch.nn.functional.normalize(items, dim=-1).to(dtype)
        self.image_size = int(self.clip.visual.image_size[0])
        self.mean = torch.tensor((0.48145466, 0.4578275, 0.40821073), device=device)
        self.std = torch.tensor((0.26862954, 0.26130258, 0.27577711), device=device)

    def search(self, queries: Any) -> Any:
        scores = queries.to(self.items.dtype) @ self.items.T  # (sessions, N)
        return scores.topk(self.args.topk, dim=-1).indices

    def encode_text(self, texts: list[str]) -> Any:
        import torch

        tokens = self.tokenizer(texts).to(self.device)
        with torch.inference_mode():
            return torch.nn.functional.normalize(self.clip.encode_text(tokens).float(), dim=-1)

    def generate_text(self, sessions: int) -> Any:
        import torch
        from transformers import GenerationConfig

        vocab = self.llm.config.vocab_size
        ids = torch.randint(100, vocab, (sessions, self.args.prompt_tokens), device=self.device)
        config = GenerationConfig(
            max_new_tokens=self.args.new_tokens,
            min_new_tokens=self.args.new_tokens,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=1,
            cache_implementation=None if self.args.no_static_cache else "static",
        )
        with torch.inference_mode():
            return self.llm.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config
            )

    def generate_images(self, sessions: int, seed: int) -> Any:
        import torch

        gens = [torch.Generator(device=self.device).manual_seed(seed + i) for i in range(sessions)]
        with torch.inference_mode():
            return self.pipe(
                prompt=[DIALOGUE] * sessions,
                num_inference_steps=1,
                guidance_scale=0.0,
                height=self.args.size,
                width=self.args.size,
                generator=gens,
                output_type="pt",
            ).images  # (sessions, 3, H, W) in [0, 1]

    def encode_images(self, pixels: Any) -> Any:
        import torch

        size = (self.image_size, self.image_size)
        x = torch.nn.functional.interpolate(pixels.float(), size=size, mode="bicubic")
        x = ((x - self.mean[:, None, None]) / self.std[:, None, None]).to(self.items.dtype)
        with torch.inference_mode():
            return torch.nn.functional.normalize(self.clip.encode_image(x).float(), dim=-1)

    def __call__(self, watch: Stopwatch, sessions: int, seed: int, record: bool) -> None:
        import torch

        texts = [f"{DIALOGUE} #{seed}-{i}" for i in range(sessions)]
        query = watch.run("text_encode", lambda: self.encode_text(texts), record)
        watch.run("text_search", lambda: self.search(query), record)
        watch.run("llm_generate", lambda: self.generate_text(sessions), record)
        pixels = watch.run("image_generate", lambda: self.generate_images(sessions, seed), record)
        image = watch.run("image_encode", lambda: self.encode_images(pixels), record)
        fused = torch.nn.functional.normalize(0.5 * query + 0.5 * image, dim=-1)
        watch.run("fused_search", lambda: self.search(fused), record)


def run(turn: Turn, device: str, sessions: int, args: argparse.Namespace) -> dict[str, list[float]]:
    watch = Stopwatch(device)
    for i in range(args.warmup + args.turns):
        record = i >= args.warmup
        watch.sync()
        start = time.perf_counter()
        turn(watch, sessions, seed=i * sessions, record=record)
        watch.sync()
        if record:
            watch.times["turn_total"].append(time.perf_counter() - start)
    return watch.times


def report(times: dict[str, list[float]], sessions: int) -> None:
    print(f"{'stage':<16}{'p50 ms':>10}{'p95 ms':>10}")
    for stage in (*STAGES, "turn_total"):
        ms = np.asarray(times[stage]) * 1000
        print(f"{stage:<16}{np.percentile(ms, 50):>10.1f}{np.percentile(ms, 95):>10.1f}")
    if sessions > 1:
        total = np.asarray(times["turn_total"])
        print(
            f"sessions={sessions} batched: {sessions / total.mean():.2f} turns/s, "
            f"turn p50 {np.percentile(total, 50) * 1000:.1f} ms, "
            f"p95 {np.percentile(total, 95) * 1000:.1f} ms"
        )


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    args.items = args.items or (2000 if args.tiny else 1_000_000)
    args.size = args.size or (64 if args.tiny else 512)
    args.topk = min(args.topk, args.items)
    torch.manual_seed(0)
    start = time.perf_counter()
    turn = Turn(args, device, dtype)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(
        f"device={device} ({name}) dtype={str(dtype).removeprefix('torch.')} "
        f"tiny={args.tiny} items={args.items} image={args.size}px "
        f"llm_tokens={args.new_tokens} build={time.perf_counter() - start:.1f}s"
    )
    print(f"\nsingle session, {args.turns} turns:")
    report(run(turn, device, 1, args), 1)
    if args.sessions > 1:
        print(f"\n{args.sessions} concurrent sessions, batched per stage, {args.turns} turns:")
        report(run(turn, device, args.sessions, args), args.sessions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
