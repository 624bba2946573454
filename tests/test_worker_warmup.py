"""Gpu workers preload every model of the profile, so the first turn does not pay for loading."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import override_settings

from workers import warmup
from workers.models import registry


def test_load_all_models_loads_each_model_once(offline_models: dict[str, Any]) -> None:
    loaded = warmup.load_all_models()
    assert {"encoder", "text_embedder", "refiner", "generator"} <= set(loaded)
    encoder = registry.get_encoder()
    assert warmup.load_all_models() == loaded  # cached: nothing new, nothing reloaded
    assert registry.get_encoder() is encoder


def _consumer(*queues: str) -> SimpleNamespace:
    return SimpleNamespace(
        task_consumer=SimpleNamespace(queues=[SimpleNamespace(name=q) for q in queues])
    )


@pytest.mark.parametrize(
    ("enabled", "queues", "starts"),
    [(True, ("gpu",), True), (True, ("default",), False), (False, ("gpu",), False)],
)
def test_only_enabled_gpu_workers_warm_up(
    monkeypatch: pytest.MonkeyPatch, enabled: bool, queues: tuple[str, ...], starts: bool
) -> None:
    started: list[str] = []

    def fake_load() -> list[str]:
        started.append("load")
        return []

    # The loading itself is covered above; here only the decision to start it is under test.
    monkeypatch.setattr(warmup, "load_all_models", fake_load)
    with override_settings(DAR_WARM_MODELS=enabled, CELERY_GPU_QUEUE="gpu"):
        warmup._warm_on_start(_consumer(*queues))
        for thread in threading.enumerate():
            if thread.name == "dar-warmup":
                thread.join(5)
    assert started == (["load"] if starts else [])
