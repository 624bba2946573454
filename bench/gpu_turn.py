"""Latency of one DAR search turn, stage by stage, on standard-size models with random weights.

Builds the product's architectures without downloading weights (open_clip ViT-B-32, a
Qwen2.5-1.5B-sized causal LM, an SD-Turbo-sized UNet/VAE/text encoder) and times, per turn:
text encode -> text-first search over N catalogue vectors -> LLM decode (48 tokens) -> one 1-step
image -> encode the image -> fused search. Random weights cost the same FLOPs as trained ones, so
the timings hold for real checkpoints.

Two variants are compared (``--variants``):

* ``generate``: transformers ``generate`` with a static KV cache (which transformers compiles on
  CUDA by itself) and SD-Turbo's own VAE decoder;
* ``fast``: the product's ``GreedyDecoder`` (one compiled decode step replayed as a CUDA graph,
  stop checks every 8 tokens) and the tiny VAE decoder (TAESD architecture, ``DAR_GENERATOR_VAE``);
* ``fast+compile``: ``fast`` with the UNet and the pipeline's text encoder compiled
  (``torch.compile`` mode ``reduce-overhead``).

Batched runs (``--sessions``) use the first variant and put N sessions' work into each forward
pass, as the GPU worker's micro-batchers do; they report throughput and the latency bound a
session sees.

    python -m bench.gpu_turn                                 # CUDA, 1M items
    python -m bench.gpu_turn --sessions 16 32 --json out.json
    python -m bench.gpu_turn --tiny --device cpu             # toy sizes: a smoke test anywhere
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
    p.add_argument(
        "--sessions", type=int, nargs="*", default=[], help="also run N sessions batched (fast)"
    )
    p.add_argument(
        "--variants",
        default="fast,generate",
        help="comma-separated: generate, fast, fast+compile (fast with the UNet and its text "
        "encoder compiled); batched runs use the first",
    )
    p.add_argument("--long-tokens", type=int, default=160, help="also time an LLM answer this long")
    p.add_argument(
        "--fields",
        type=int,
        default=2,
        help="also time a refine decoded with parallel fields (DAR_LLM_FIELDS): this many rows "
        "per session (description + prompts), --new-tokens each",
    )
    p.add_argument("--budget-s", type=float, default=None, help="start no new run after this")
    p.add_argument("--json", type=Path, default=None, help="write all figures here as they come")
    p.add_argument(
        "--estimate-from",
        type=Path,
        default=None,
        help="no timing: estimate latency under load from a JSON this script wrote",
    )
    p.add_argument("--rates", type=float, nargs="*", default=[40, 50, 60], help="turns/s offered")
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

        from workers.models.decoding import GreedyDecoder

        self.args, self.device, self.dtype = args, device, dtype
        self.clip, self.tokenizer = build_clip(args.tiny, device, dtype)
        self.llm = build_llm(args.tiny, device, dtype)
        self.pipe = build_sd(args.tiny, device, dtype)
        self.full_vae = self.pipe.vae
        self.tiny_vae = build_tiny_vae(device, dtype)
        self.unet = self.pipe.unet
        self.text_encoder = self.pipe.text_encoder
        self.compiled: tuple[Any, Any] | None = None
        longest = max(args.new_tokens, args.long_tokens)
        cuda = device.startswith("cuda")
        self.decoder = GreedyDecoder(self.llm, args.prompt_tokens + longest, compile=cuda)
        dim = int(self.clip.text_projection.shape[1])
        gen = torch.Generator(device=device).manual_seed(0)
        items = torch.randn(args.items, dim, device=device, generator=gen)
        self.items = torch.nn.functional.normalize(items, dim=-1).to(dtype)
        self.image_size = int(self.clip.visual.image_size[0])
        self.mean = torch.tensor((0.48145466, 0.4578275, 0.40821073), device=device)
        self.std = torch.tensor((0.26862954, 0.26130258, 0.27577711), device=device)
        self.variant = "generate"

    def use(self, variant: str) -> None:
        import torch

        self.variant = variant
        fast = variant.startswith("fast")
        self.pipe.vae = self.tiny_vae if fast else self.full_vae
        unet, text_encoder = self.unet, self.text_encoder
        if variant == "fast+compile":
            if self.compiled is None:
                self.compiled = (
                    torch.compile(self.unet, mode="reduce-overhead"),
                    torch.compile(self.text_encoder, mode="reduce-overhead"),
                )
            unet, text_encoder = self.compiled
        self.pipe.unet, self.pipe.text_encoder = unet, text_encoder

    def search(self, queries: Any) -> Any:
        scores = queries.to(self.items.dtype) @ self.items.T  # (sessions, N)
        return scores.topk(self.args.topk, dim=-1).indices

    def encode_text(self, texts: list[str]) -> Any:
        import torch

        tokens = self.tokenizer(texts).to(self.device)
        with torch.inference_mode():
            return torch.nn.functional.normalize(self.clip.encode_text(tokens).float(), dim=-1)

    def generate_text(self, sessions: int, tokens: int | None = None, ids: Any = None) -> Any:
        import torch
        from transformers import GenerationConfig

        tokens = tokens or self.args.new_tokens
        if ids is None:
            vocab = self.llm.config.vocab_size
            shape = (sessions, self.args.prompt_tokens)
            ids = torch.randint(100, vocab, shape, device=self.device)
        mask = torch.ones_like(ids)
        if self.variant.startswith("fast"):
            return self.decoder(ids, mask, tokens)  # no stop ids: always the full length
        config = GenerationConfig(
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=1,
            cache_implementation="static",
        )
        with torch.inference_mode():
            out = self.llm.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        return out[:, ids.shape[1] :]

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


def build_tiny_vae(device: str, dtype: Any) -> Any:
    """The tiny VAE (TAESD's architecture: AutoencoderTiny's defaults), random weights."""
    import torch
    from diffusers import AutoencoderTiny

    with torch.device(device):
        vae: Any = AutoencoderTiny()
    return vae.to(device, dtype).eval()


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
    # A product-length answer (description plus prompts), LLM only.
    for i in range(args.warmup + 5):
        watch.run("llm_long", lambda: turn.generate_text(sessions, args.long_tokens), i >= 2)
    # The product's refine with parallel fields: one row per field, all decoded together.
    rows = sessions * args.fields
    for i in range(args.warmup + 5):
        watch.run("llm_fields", lambda: turn.generate_text(rows), i >= 2)
    return watch.times


def summarise(times: dict[str, list[float]], sessions: int) -> dict[str, Any]:
    """p50/p95 in ms per stage; for batches, throughput and the latency a session sees."""
    out: dict[str, Any] = {"sessions": sessions}
    for stage, values in times.items():
        ms = np.asarray(values) * 1000
        out[stage] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
        }
    total = np.asarray(times["turn_total"])
    out["turns_per_s"] = sessions / float(total.mean())
    # A turn that arrives while a batch runs waits for it, then runs in the next: at worst two
    # batch times (p95 of each), which is the latency a session sees under full load.
    out["session_latency_bound_ms"] = 2 * float(np.percentile(total, 95)) * 1000
    return out


def report(summary: dict[str, Any]) -> None:
    print(f"{'stage':<16}{'p50 ms':>10}{'p95 ms':>10}")
    for stage in (*STAGES, "turn_total", "llm_long", "llm_fields"):
        if stage in summary:
            row = summary[stage]
            print(f"{stage:<16}{row['p50_ms']:>10.1f}{row['p95_ms']:>10.1f}")
    if summary["sessions"] > 1:
        print(
            f"sessions={summary['sessions']} batched: {summary['turns_per_s']:.1f} turns/s, "
            f"latency bound (2 x p95 batch) {summary['session_latency_bound_ms']:.0f} ms"
        )


def simulate_load(
    batch_s: dict[int, float], rate: float, turns: int = 20000, seed: int = 0
) -> tuple[float, float]:
    """p50/p95 seconds from arrival to final results when Poisson arrivals at ``rate`` turns/s
    are served by one GPU that takes everything waiting (up to the largest measured batch) as one
    batch; a batch of b takes the measured time, interpolated between measured sizes."""
    sizes = np.array(sorted(batch_s), dtype=float)
    times = np.array([batch_s[int(b)] for b in sizes])
    arrivals = np.cumsum(np.random.default_rng(seed).exponential(1 / rate, turns))
    latency = np.empty(turns)
    clock, i, largest = 0.0, 0, int(sizes[-1])
    while i < turns:
        clock = max(clock, arrivals[i])
        j = int(np.searchsorted(arrivals, clock, side="right"))
        j = min(max(j, i + 1), i + largest)
        clock += float(np.interp(j - i, sizes, times))
        latency[i:j] = clock - arrivals[i:j]
        i = j
    return float(np.percentile(latency, 50)), float(np.percentile(latency, 95))


def estimate(results: dict[str, Any], rates: list[float]) -> list[dict[str, Any]]:
    """Latency under load for the variant that has batched runs, from its measured batch times
    (p50, and p95 as if every batch were a slow one)."""
    runs = [r for r in results["runs"] if "turn_total" in r]
    batched = [r for r in runs if r["sessions"] > 1]
    if not batched:
        return []
    variant = batched[0]["variant"]
    own = {r["sessions"]: r["turn_total"] for r in runs if r["variant"] == variant}
    rows = []
    print(
        f"\nlatency under load ({variant}, batches up to {max(own)}; simulated from the figures):"
    )
    print(f"{'turns/s':>8}{'p50 ms':>10}{'p95 ms':>10}{'p95 ms (slow batches)':>24}")
    for rate in rates:
        mid = simulate_load({b: t["p50_ms"] / 1000 for b, t in own.items()}, rate)
        slow = simulate_load({b: t["p95_ms"] / 1000 for b, t in own.items()}, rate)
        rows.append(
            {
                "rate": rate,
                "p50_ms": mid[0] * 1000,
                "p95_ms": mid[1] * 1000,
                "p95_ms_slow_batches": slow[1] * 1000,
            }
        )
        print(f"{rate:>8.0f}{mid[0] * 1000:>10.0f}{mid[1] * 1000:>10.0f}{slow[1] * 1000:>24.0f}")
    return rows


def check_decoder(turn: Turn) -> dict[str, Any]:
    """The fast decoder continues like transformers' greedy ``generate`` (same tokens).

    bf16 kernels of different shapes can flip a near-tie, so this reports the agreement rather
    than failing on the first differing token.
    """
    import torch

    # The turn's own shapes, so the compiled graphs are reused by the timed runs.
    n = turn.args.new_tokens
    shape = (1, turn.args.prompt_tokens)
    ids = torch.randint(100, turn.llm.config.vocab_size, shape, device=turn.device)
    turn.use("generate")
    ref = turn.generate_text(1, n, ids=ids)
    turn.use("fast")
    out = turn.generate_text(1, n, ids=ids)
    same = (out == ref).float().mean().item()
    first = int((out != ref).any(0).float().argmax()) if same < 1 else n
    return {"token_agreement": same, "identical_prefix_tokens": first}


def main(argv: list[str] | None = None) -> int:
    import json

    import torch

    args = parse_args(argv)
    if args.estimate_from:
        estimate(json.loads(args.estimate_from.read_text()), args.rates)
        return 0
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    args.items = args.items or (2000 if args.tiny else 1_000_000)
    args.size = args.size or (64 if args.tiny else 512)
    args.topk = min(args.topk, args.items)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - {"generate", "fast", "fast+compile"}
    if unknown:
        raise SystemExit(f"unknown variants: {sorted(unknown)}")
    torch.manual_seed(0)
    start = time.perf_counter()
    turn = Turn(args, device, dtype)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    results: dict[str, Any] = {
        "device": name,
        "dtype": str(dtype).removeprefix("torch."),
        "items": args.items,
        "image_px": args.size,
        "llm_tokens": args.new_tokens,
        "prompt_tokens": args.prompt_tokens,
        "build_s": time.perf_counter() - start,
        "runs": [],
    }
    print(
        f"device={device} ({name}) dtype={results['dtype']} tiny={args.tiny} items={args.items} "
        f"image={args.size}px llm_tokens={args.new_tokens} build={results['build_s']:.1f}s",
        flush=True,
    )

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))

    def within_budget(label: str) -> bool:
        spent = time.perf_counter() - start
        if args.budget_s is not None and spent > args.budget_s:
            print(f"\n{label}: skipped, {spent:.0f}s spent of a {args.budget_s:.0f}s budget")
            return False
        return True

    if "generate" in variants and any(v.startswith("fast") for v in variants):
        try:
            results["decoder_check"] = check_decoder(turn)
            print(f"decoder check: {results['decoder_check']}", flush=True)
        except Exception as exc:  # report and go on: the timings are still worth having
            results["decoder_check"] = {"error": repr(exc)}
            print(f"decoder check failed: {exc!r}", flush=True)
    # The first variant single and batched, then the others single (the riskiest last).
    plan = [(variants[0], 1)] + [(variants[0], n) for n in args.sessions if n > 1]
    plan += [(v, 1) for v in variants[1:]]
    for variant, sessions in plan:
        label = f"{variant}, {sessions} session{'s' * (sessions > 1)}"
        if not within_budget(label):
            continue
        print(f"\n{label}, {args.turns} turns:", flush=True)
        began = time.perf_counter()
        try:
            turn.use(variant)
            summary = summarise(run(turn, device, sessions, args), sessions)
        except Exception as exc:
            print(f"failed: {exc!r}", flush=True)
            results["runs"].append({"variant": variant, "sessions": sessions, "error": repr(exc)})
            save()
            continue
        summary.update(variant=variant, wall_s=time.perf_counter() - began)
        results["runs"].append(summary)
        save()
        report(summary)
    results["load_estimate"] = estimate(results, args.rates)
    if device.startswith("cuda"):
        results["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print(f"\npeak GPU memory {results['max_memory_gib']:.1f} GiB")
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
