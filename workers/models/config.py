"""Model settings from the environment and the choice between real and stand-in models.

Importing this module must stay cheap (the web process uses ``is_stand_in`` and the active model
names): no torch, no ML library, no network. A process reads its settings once
(``model_settings()``; ``registry.reset_models`` forgets them, for tests). Profile ``auto`` picks
``standard`` only when every standard model is already on disk (a local path or the Hugging Face
cache), else the offline stand-ins, so a machine without weights or network still runs end to
end.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from dar_site.env import (
    EnvError,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_path,
    env_str,
)

from . import offline
from .device import PRECISIONS

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("auto", "standard", "offline")
LLM_FIELDS = ("auto", "sequential", "parallel")
DEFAULT_ENCODER = "open_clip:ViT-B-32:laion2b_s34b_b79k"
DEFAULT_TEXT_EMBEDDER = offline.TEXT_EMBEDDER_NAME
DEFAULT_LLM = "Qwen/Qwen2.5-1.5B-Instruct"
DEFAULT_GENERATOR = "stabilityai/sd-turbo"
DEFAULT_GEN_SIZE = 512
DEFAULT_GEN_STEPS = 1

# open_clip tags whose Hugging Face repo is known without importing open_clip (which imports
# torch). Other tags cannot be checked cheaply and are assumed present when configured.
_OPEN_CLIP_HF_REPOS = {
    ("ViT-B-32", "laion2b_s34b_b79k"): "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    ("ViT-B-16", "laion2b_s34b_b88k"): "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
    ("ViT-L-14", "laion2b_s32b_b82k"): "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
}
_OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class EncoderSpec:
    """``open_clip:<arch>:<tag-or-path>`` or ``blip:<hub-id-or-path>``."""

    kind: str
    source: str
    arch: str = ""

    @classmethod
    def parse(cls, spec: str, variable: str = "DAR_ENCODER") -> EncoderSpec:
        kind, _, rest = spec.strip().partition(":")
        if kind == "open_clip":
            arch, _, source = rest.partition(":")
            if arch and source:
                return cls("open_clip", source, arch)
        elif kind == "blip" and rest:
            return cls("blip", rest)
        raise EnvError(
            f"{variable}={spec!r} must be 'open_clip:<arch>:<pretrained tag or path>' "
            "or 'blip:<hub id or path>'"
        )

    def __str__(self) -> str:
        return f"open_clip:{self.arch}:{self.source}" if self.arch else f"blip:{self.source}"


@dataclass(frozen=True)
class TokenBudgets:
    """Tokens an LLM answer may take: ~40 words of description, ~25 words per prompt, ~20 words
    of question. Decoding time is linear in them, so a slow CPU deployment may want them smaller
    (``DAR_LLM_DESCRIPTION_TOKENS``, ``DAR_LLM_PROMPT_TOKENS``, ``DAR_LLM_QUESTION_TOKENS``)."""

    description: int = 80
    prompt: int = 48
    question: int = 48

    def refine(self, k: int) -> int:
        """Tokens for a whole single-pass refine answer (labels and newlines included)."""
        return self.description + (self.prompt + 4) * max(k, 0)


@dataclass(frozen=True)
class ModelSettings:
    profile: str = "auto"
    model_dir: Path = REPO_ROOT / ".models"
    encoder: str = DEFAULT_ENCODER
    text_embedder: str = DEFAULT_TEXT_EMBEDDER
    llm: str = DEFAULT_LLM
    llm_backend: str = "hf"
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = DEFAULT_LLM
    openai_api_key: str = ""
    openai_timeout: float = 30.0
    generator: str = DEFAULT_GENERATOR
    gen_size: int | None = None  # None: the generator's own default (512, offline 64)
    gen_steps: int | None = None  # None: 1 (SD-Turbo and the offline pipeline are one-step)
    gen_guidance: float = 0.0  # SD-Turbo is trained without classifier-free guidance
    gen_vae: str = ""  # a diffusers AutoencoderTiny replacing the VAE (standard profile only)
    device: str = "auto"
    # torch's intra-op threads on CPU; 0: one on machines with at most 2 cores (the worker's jobs,
    # the database and the ingest's decoding share them: one thread each ran the offline encoder
    # 25% and the text model 35% faster there, and several times faster on a busy machine),
    # torch's own default elsewhere.
    torch_threads: int = 0
    # The product-text model's precision ("auto", "fp32", "bf16"): see device.sentence_dtype.
    text_precision: str = "auto"
    encode_batch: int = 64
    llm_batch: int = 16  # dialogues decoded together by the local LLM
    gen_batch: int = 16  # images per diffusion pipeline call
    batch_window_ms: float = 5.0
    llm_tokens: TokenBudgets = TokenBudgets()
    # CUDA: compile the LLM's decoding forward (torch.compile, CUDA graphs); the first calls of
    # each cache bucket then take tens of seconds to compile. Off by default.
    llm_compile: bool = False
    # CUDA: static KV caches hold this many tokens, or this times a power of two for longer
    # prompts.
    llm_cache_tokens: int = 1024
    # How a refine's fields (description, prompt 1..k) are decoded: "sequential" (each after the
    # one before, seeing it) or "parallel" (each from the dialogue alone, as rows of one batch).
    # On a GPU a decoding step costs about the same for a few rows as for one (it streams the
    # weights), so parallel fields make a refine cost its longest field instead of the sum of
    # all; on a CPU the extra rows cost compute. "auto": parallel on CUDA, sequential elsewhere.
    llm_fields: str = "auto"

    @classmethod
    def from_env(cls) -> ModelSettings:
        """Read and check every model variable (each call reads the environment again; the
        process's settings are ``model_settings()``)."""
        encoder = env_str("DAR_ENCODER", DEFAULT_ENCODER)
        EncoderSpec.parse(encoder)  # fail at startup, naming the variable, not at first use
        llm = env_str("DAR_LLM", DEFAULT_LLM)
        size = env_int("DAR_GEN_SIZE", 0, min=0, max=2048)
        steps = env_int("DAR_GEN_STEPS", 0, min=0, max=200)
        return cls(
            profile=env_choice("DAR_MODEL_PROFILE", "auto", PROFILES),
            model_dir=env_path("DAR_MODEL_DIR", REPO_ROOT / ".models"),
            encoder=encoder,
            text_embedder=env_str("DAR_TEXT_EMBEDDER", DEFAULT_TEXT_EMBEDDER),
            llm=llm,
            llm_backend=env_choice("DAR_LLM_BACKEND", "hf", ("hf", "openai")),
            openai_base_url=env_str("DAR_OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
            openai_model=env_str("DAR_OPENAI_MODEL", llm),
            openai_api_key=env_str("DAR_OPENAI_API_KEY", ""),
            openai_timeout=env_float("DAR_OPENAI_TIMEOUT", 30.0, min=0.1, max=600.0),
            generator=env_str("DAR_GENERATOR", DEFAULT_GENERATOR),
            gen_size=size or None,
            gen_steps=steps or None,
            gen_guidance=env_float("DAR_GEN_GUIDANCE", 0.0, min=0.0, max=30.0),
            gen_vae=env_str("DAR_GENERATOR_VAE", ""),
            device=env_choice("DAR_DEVICE", "auto", ("auto", "cpu", "cuda")),
            torch_threads=env_int("DAR_TORCH_THREADS", 0, min=0, max=1024),
            text_precision=env_choice("DAR_TEXT_EMBEDDER_PRECISION", "auto", PRECISIONS),
            encode_batch=env_int("DAR_ENCODE_BATCH", 64, min=1, max=4096),
            llm_batch=env_int("DAR_LLM_BATCH", 16, min=1, max=256),
            gen_batch=env_int("DAR_GEN_BATCH", 16, min=1, max=256),
            batch_window_ms=env_float("DAR_BATCH_WINDOW_MS", 5.0, min=0.0, max=1000.0),
            llm_tokens=TokenBudgets(
                description=env_int("DAR_LLM_DESCRIPTION_TOKENS", 80, min=4, max=1024),
                prompt=env_int("DAR_LLM_PROMPT_TOKENS", 48, min=4, max=1024),
                question=env_int("DAR_LLM_QUESTION_TOKENS", 48, min=4, max=1024),
            ),
            llm_compile=env_bool("DAR_LLM_COMPILE", False),
            llm_cache_tokens=env_int("DAR_LLM_CACHE_TOKENS", 1024, min=64, max=131072),
            llm_fields=env_choice("DAR_LLM_FIELDS", "auto", LLM_FIELDS),
        )


@functools.cache
def model_settings() -> ModelSettings:
    """This process's model settings: the environment, read once (the first call).

    Every caller uses this rather than ``ModelSettings.from_env()``, so a process runs on one
    set of settings. Tests that change the environment forget them with
    ``model_settings.cache_clear()`` (``registry.reset_models`` does it).
    """
    return ModelSettings.from_env()


@dataclass(frozen=True)
class ModelPlan:
    """What the registry loads: sources (paths, hub ids, tags) and the stable model names."""

    profile: str  # "standard" or "offline"
    encoder: EncoderSpec
    encoder_name: str
    text_embedder_source: str
    text_embedder_name: str
    llm_backend: str
    llm_source: str
    llm_name: str
    generator_source: str
    generator_name: str
    gen_size: int
    gen_steps: int
    gen_vae: str = ""  # AutoencoderTiny source replacing the pipeline's VAE ("" = its own)


def _cached(repo_id: str, filenames: tuple[str, ...]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        try:
            if isinstance(try_to_load_from_cache(repo_id, filename), str):
                return True
        except ValueError:  # not a valid repo id
            return False
    return False


def _local_or_cached(source: str, filenames: tuple[str, ...]) -> bool:
    return Path(source).expanduser().exists() or _cached(source, filenames)


def _encoder_available(spec: EncoderSpec) -> bool:
    if spec.kind == "blip":
        return _local_or_cached(spec.source, ("config.json",))
    if Path(spec.source).expanduser().exists():
        return True
    repo = _OPEN_CLIP_HF_REPOS.get((spec.arch, spec.source))
    return _cached(repo, _OPEN_CLIP_WEIGHT_FILES) if repo else True


def missing_standard_models(settings: ModelSettings) -> list[str]:
    """Standard models that are neither a local path nor in the Hugging Face cache."""
    missing = []
    if not _encoder_available(EncoderSpec.parse(settings.encoder)):
        missing.append(settings.encoder)
    packaged = settings.text_embedder == DEFAULT_TEXT_EMBEDDER and offline.minilm_dir()
    if not packaged and not _local_or_cached(settings.text_embedder, ("modules.json",)):
        missing.append(settings.text_embedder)
    if settings.llm_backend == "hf" and not _local_or_cached(settings.llm, ("config.json",)):
        missing.append(settings.llm)
    if not _local_or_cached(settings.generator, ("model_index.json",)):
        missing.append(settings.generator)
    if settings.gen_vae and not _local_or_cached(settings.gen_vae, ("config.json",)):
        missing.append(settings.gen_vae)
    return missing


@functools.lru_cache(maxsize=8)
def _profile_for(settings: ModelSettings) -> str:
    if settings.profile != "auto":
        return settings.profile
    missing = missing_standard_models(settings)
    if not missing:
        return "standard"
    log.warning(
        "DAR_MODEL_PROFILE=auto: %s not available locally, using the offline stand-in models "
        "(random-weight tiny encoder and generator; results are not meaningful)",
        ", ".join(missing),
    )
    return "offline"


def resolved_profile(settings: ModelSettings | None = None) -> str:
    """``standard`` or ``offline`` (``auto`` resolved; cached per settings; default: this
    process's ``model_settings()``)."""
    return _profile_for(settings or model_settings())


def is_stand_in(settings: ModelSettings | None = None) -> bool:
    """True when this process runs on the offline stand-ins (random-weight encoder and
    generator): the UI says so, and ranking does not trust the encoder's image scores."""
    return resolved_profile(settings) == "offline"


def clear_profile_cache() -> None:
    _profile_for.cache_clear()


def model_plan(settings: ModelSettings | None = None) -> ModelPlan:
    """The models the registry will load, without loading anything (cheap)."""
    settings = settings or model_settings()
    profile = resolved_profile(settings)
    openai = settings.llm_backend == "openai"
    llm_name = f"openai:{settings.openai_model}" if openai else settings.llm
    text_source = settings.text_embedder
    if settings.text_embedder == DEFAULT_TEXT_EMBEDDER and (packaged := offline.minilm_dir()):
        text_source = str(packaged)  # same weights as the hub model, no download
    if profile == "offline":
        gguf = offline.smollm2_gguf()
        folder = Path(settings.model_dir)
        return ModelPlan(
            profile="offline",
            encoder=EncoderSpec(
                "open_clip", str(folder / offline.ENCODER_DIR), offline.ENCODER_ARCH
            ),
            encoder_name=offline.ENCODER_NAME,
            text_embedder_source=text_source,
            text_embedder_name=settings.text_embedder,
            llm_backend=settings.llm_backend,
            llm_source=str(gguf) if gguf else "",
            llm_name=llm_name if openai else offline.LLM_NAME,
            generator_source=str(folder / offline.GENERATOR_DIR),
            generator_name=offline.GENERATOR_NAME,
            gen_size=settings.gen_size or offline.GEN_SIZE,
            gen_steps=settings.gen_steps or 1,
        )
    spec = EncoderSpec.parse(settings.encoder)
    return ModelPlan(
        profile="standard",
        encoder=spec,
        encoder_name=str(spec),
        text_embedder_source=text_source,
        text_embedder_name=settings.text_embedder,
        llm_backend=settings.llm_backend,
        llm_source=settings.llm,
        llm_name=llm_name,
        generator_source=settings.generator,
        # The decoder changes the pixels, so it is part of the name (evaluation caches key on it).
        generator_name=f"diffusers:{settings.generator}"
        + (f"+vae:{settings.gen_vae}" if settings.gen_vae else ""),
        gen_size=settings.gen_size or DEFAULT_GEN_SIZE,
        gen_steps=settings.gen_steps or DEFAULT_GEN_STEPS,
        gen_vae=settings.gen_vae,
    )
