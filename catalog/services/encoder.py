"""The active encoder's name, as the web process can know it: without loading a model.

Searches and progress counts only use vectors whose ``model_name`` equals this name. The web
process never imports torch, so the name comes from configuration: ``workers.models.config``
derives it from the environment (``model_plan().encoder_name``). If that cannot say (a broken
configuration), the name used by the most recent embedding job stands in for it.
"""

from __future__ import annotations

import logging

from catalog.models import ItemEmbedding

log = logging.getLogger(__name__)


def configured_encoder_name() -> str | None:
    """The encoder name ``workers.models.config.model_plan()`` derives from settings (no torch:
    it resolves the profile and names, loading nothing), or None if it cannot say."""
    try:
        from workers.models.config import model_plan

        name = model_plan().encoder_name
    except Exception:  # a misconfiguration shows up where the models load, not in a count
        log.debug("workers.models.config.model_plan() failed", exc_info=True)
        return None
    return name or None


def configured_text_embedder_name() -> str | None:
    try:
        from workers.models.config import model_plan

        return model_plan().text_embedder_name or None
    except Exception:
        log.debug("workers.models.config.model_plan() failed", exc_info=True)
        return None


def last_used_encoder_name() -> str | None:
    """The image model of the most recently created vector (what the last job used)."""
    return (
        ItemEmbedding.objects.filter(space=ItemEmbedding.Space.IMAGE)
        .order_by("-pk")
        .values_list("model_name", flat=True)
        .first()
    )


def active_encoder_name() -> str | None:
    return configured_encoder_name() or last_used_encoder_name()
