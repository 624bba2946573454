"""Load the models when a gpu worker starts, so the first shopper does not wait for them.

Loading the LLM and the diffusion pipeline takes seconds to minutes; without this the first turn
after a worker start pays for it. Loading runs on a thread, so the worker takes tasks at once
(a task that needs a model still loading waits on the registry's per-model lock).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import worker_ready
from django.conf import settings

log = logging.getLogger(__name__)


def load_all_models() -> list[str]:
    """Load every model of the active profile; a model that fails is logged and skipped."""
    from workers.models import registry

    for getter in (
        registry.get_encoder,
        registry.get_text_embedder,
        registry.get_refiner,
        registry.get_generator,
    ):
        try:
            getter()
        except Exception:
            log.exception("could not preload a model (%s)", getter.__name__)
    return registry.loaded_models()


@worker_ready.connect
def _warm_on_start(sender: Any = None, **_: Any) -> None:
    if not settings.DAR_WARM_MODELS:
        return
    try:
        queues = {queue.name for queue in sender.task_consumer.queues}
    except AttributeError:  # not a regular consumer (embedded test workers): do nothing
        return
    if settings.CELERY_GPU_QUEUE not in queues:
        return  # only workers that serve model tasks hold models
    threading.Thread(target=load_all_models, name="dar-warmup", daemon=True).start()
