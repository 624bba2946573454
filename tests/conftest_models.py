"""Fixtures for the model-layer tests (tests/test_models_*.py): no Django, no database.

Test modules import what they use from here. The offline models are built once per pytest run
into a temporary folder; ``build_offline_models`` is idempotent, so every module that imports the
session fixture reuses the first build.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# No test may reach the Hugging Face hub (it is unreachable on CI anyway: fail fast, not slowly).
# Set before huggingface_hub is first imported, which reads it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def offline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workers.models.offline import build_offline_models

    dest = tmp_path_factory.getbasetemp() / "dar-offline-models"
    build_offline_models(dest)
    return dest


@pytest.fixture(scope="session")
def offline_manifest(offline_dir: Path) -> dict[str, Any]:
    from workers.models.offline import read_manifest

    built = read_manifest(offline_dir)
    assert built is not None
    return built


MODEL_VARIABLES = (
    "DAR_MODEL_PROFILE",
    "DAR_MODEL_DIR",
    "DAR_ENCODER",
    "DAR_TEXT_EMBEDDER",
    "DAR_LLM",
    "DAR_LLM_BACKEND",
    "DAR_OPENAI_BASE_URL",
    "DAR_OPENAI_MODEL",
    "DAR_OPENAI_API_KEY",
    "DAR_OPENAI_TIMEOUT",
    "DAR_GENERATOR",
    "DAR_GEN_SIZE",
    "DAR_GEN_STEPS",
    "DAR_GEN_GUIDANCE",
    "DAR_GENERATOR_VAE",
    "DAR_DEVICE",
    "DAR_ENCODE_BATCH",
    "DAR_LLM_BATCH",
    "DAR_GEN_BATCH",
    "DAR_BATCH_WINDOW_MS",
)


# MonkeyPatch is final for type checkers only; this adds one step after two of its methods.
class ModelEnv(pytest.MonkeyPatch):  # type: ignore[misc]
    """``monkeypatch`` whose changes of the environment reach the model settings, which a process
    otherwise reads once (``config.model_settings``)."""

    def setenv(self, name: str, value: str, prepend: str | None = None) -> None:
        super().setenv(name, value, prepend)
        _forget_settings()

    def delenv(self, name: str, raising: bool = True) -> None:
        super().delenv(name, raising)
        _forget_settings()


def _forget_settings() -> None:
    from workers.models.config import model_settings

    model_settings.cache_clear()


@pytest.fixture
def model_env(offline_dir: Path) -> Iterator[pytest.MonkeyPatch]:
    """A clean model environment: offline profile on the session build, CPU, no hub access; the
    registry (and the settings it read) is reset before and after."""
    from workers.models.registry import reset_models

    patch = ModelEnv()
    try:
        for name in MODEL_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv("DAR_MODEL_PROFILE", "offline")
        patch.setenv("DAR_MODEL_DIR", str(offline_dir))
        patch.setenv("DAR_DEVICE", "cpu")
        patch.setenv("HF_HUB_OFFLINE", "1")
        reset_models()
        yield patch
    finally:
        patch.undo()
        reset_models()
