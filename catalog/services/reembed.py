"""Admission of re-embed requests: one in flight per catalog, a limited number per shop.

A re-embed queues a job per batch of items on the gpu queue, which every shop's search turns also
use, so repeated requests would pile up duplicate work in front of everybody. Refused:

* ``reembed_in_progress`` (409): a re-embed of this catalog was queued within the task visibility
  timeout and some of its items are still pending (its jobs are waiting or running); or mode
  ``all`` while items are pending (it would queue them a second time). ``stale`` and ``failed``
  never touch pending items, so uploads being embedded do not block them.
* ``reembed_rate_limited`` (429): the shop made DAR_REEMBED_PER_SHOP requests in
  DAR_REEMBED_WINDOW seconds.

Mode ``pending`` resends jobs lost with a broker flush: it is allowed once the last re-embed's
jobs would have been redelivered anyway (the visibility timeout passed).
"""

from __future__ import annotations

from django.conf import settings

from retrieval.services import ratelimit

from ..models import Catalog, CatalogItem
from . import embedding


class ReembedRefused(Exception):
    def __init__(self, code: str, message: str, http_status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


def _key(kind: str, ident: object) -> str:
    return f"{settings.REDIS_PREFIX}:reembed:{kind}:{ident}"


def request_reembed(catalog: Catalog, mode: str) -> int:
    """Queue a re-embed of ``catalog`` (see ``embedding.request_reembed``) unless refused."""
    redis = ratelimit.client()
    # The lock makes check-and-queue one step: two simultaneous requests cannot both find the
    # catalog idle and both queue its items.
    with redis.lock(_key("lock", catalog.pk), timeout=120, blocking_timeout=30):
        pending = CatalogItem.objects.filter(
            catalog=catalog, status=CatalogItem.Status.PENDING
        ).count()
        recent = bool(redis.exists(_key("queued", catalog.pk)))
        if pending and (recent or mode == "all"):
            raise ReembedRefused(
                "reembed_in_progress",
                f"{pending} items of this catalog are still waiting to be embedded; "
                "follow the progress endpoint and ask again when they are done.",
                409,
            )
        # Only requests that would queue work count against the shop's limit.
        limit, window = settings.DAR_REEMBED_PER_SHOP, settings.DAR_REEMBED_WINDOW
        if ratelimit.hit(_key("shop", catalog.shop_id), window) > limit:
            raise ReembedRefused(
                "reembed_rate_limited",
                f"At most {limit} re-embed requests per shop every {window} seconds.",
                429,
            )
        queued = embedding.request_reembed(catalog, mode)
        if queued:
            ttl = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
            redis.set(_key("queued", catalog.pk), 1, ex=int(str(ttl)))
        return queued
