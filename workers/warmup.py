"""Load the models when a worker starts, so the first shopper does not wait for them.

Loading the LLM and the diffusion pipeline takes seconds to minutes; without this the first turn
after a worker start pays for it. Gpu workers load every model; the interactive worker (a turn's
text stage) only what that stage uses: the encoder, and the product-text embedder when that term
is weighted. Loading runs on a thread, so the worker takes tasks at once (a task that needs a model
still loading waits on the registry's per-model lock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery.signals import worker_ready
from django.conf import settings

log = logging.getLogger(__name__)


def _load(getters: list[Callable[[], Any]]) -> list[str]:
    from workers.models import registry

    for getter in getters:
        try:
            getter()
        except Exception:
            log.exception("could not preload a model (%s)", getter.__name__)
    return registry.loaded_models()


def load_all_models() -> list[str]:
    """Load every model of the active profile; a model that fails is logged and skipped."""
    from workers.models import registry

    return _load(
        [
            registry.get_encoder,
            registry.get_text_embedder,
            registry.get_refiner,
            registry.get_generator,
        ]
    )


def load_text_stage_models() -> list[str]:
    """Load what a turn's text stage uses: the encoder, and the product-text embedder if used."""
    from workers.models import registry

    getters: list[Callable[[], Any]] = [registry.get_encoder]
    if settings.DAR_WEIGHT_PRODUCT_TEXT > 0:
        getters.append(registry.get_text_embedder)
    return _load(getters)


@worker_ready.connect
def _warm_on_start(sender: Any = None, **_: Any) -> None:
    if not settings.DAR_WARM_MODELS:
        return
    try:
        queues = {queue.name for queue in sender.task_consumer.queues}
    except AttributeError:  # not a regular consumer (embedded test workers): do nothing
        return
    if settings.CELERY_GPU_QUEUE in queues:
        load: Callable[[], list[str]] = load_all_models
    elif settings.CELERY_INTERACTIVE_QUEUE in queues:
        load = load_text_stage_models
    else:
        return  # only workers that serve model tasks hold models
    threading.Thread(target=load, name="dar-warmup", daemon=True).start()
