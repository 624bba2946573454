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
    ("enabled", "queues", "loads"),
    [
        (True, ("gpu",), "all"),
        (True, ("gpu", "interactive"), "all"),
        (True, ("interactive",), "text stage"),
        (True, ("default",), None),
        (False, ("gpu",), None),
        (False, ("interactive",), None),
    ],
)
def test_workers_warm_up_what_their_queues_need(
    monkeypatch: pytest.MonkeyPatch, enabled: bool, queues: tuple[str, ...], loads: str | None
) -> None:
    started: list[str] = []

    def fake(kind: str) -> Any:
        def load() -> list[str]:
            started.append(kind)
            return []

        return load

    # The loading itself is covered above and below; here only the decision is under test.
    monkeypatch.setattr(warmup, "load_all_models", fake("all"))
    monkeypatch.setattr(warmup, "load_text_stage_models", fake("text stage"))
    queue_settings = {"CELERY_GPU_QUEUE": "gpu", "CELERY_INTERACTIVE_QUEUE": "interactive"}
    with override_settings(DAR_WARM_MODELS=enabled, **queue_settings):
        warmup._warm_on_start(_consumer(*queues))
        for thread in threading.enumerate():
            if thread.name == "dar-warmup":
                thread.join(5)
    assert started == ([loads] if loads else [])


@pytest.mark.parametrize(("product_text", "expected"), [(0.0, 1), (0.5, 2)])
def test_the_interactive_worker_loads_only_the_text_stage_models(
    monkeypatch: pytest.MonkeyPatch, product_text: float, expected: int
) -> None:
    asked: list[str] = []
    for name in ("get_encoder", "get_text_embedder", "get_refiner", "get_generator"):
        monkeypatch.setattr(registry, name, lambda name=name: asked.append(name))
    with override_settings(DAR_WEIGHT_PRODUCT_TEXT=product_text):
        warmup.load_text_stage_models()
    # The encoder, and the product-text embedder only when that term counts; never the LLM or
    # the generator.
    assert asked == ["get_encoder", "get_text_embedder"][:expected]
