"""A catalog's embeddable search widget: its publishable key, its allowed origins, its snippet.

The key is not a secret (it is in the shop's page source); it names the catalog, and rotating it
(the catalog admin) makes every copy of the old snippet stop working at once. What keeps another
site from using the widget is the browser: it sends the page's true ``Origin``, which must be one
of the catalog's allowed origins exactly (scheme, host and port). Search sessions the widget starts
then belong to a token handed to it at creation (retrieval/services/widget.py), not to a cookie.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from catalog.models import Catalog, new_publishable_key
from dar_site.origin_names import normalize_origins

# The widget's script: its unhashed static name, so that a snippet pasted into a shop's pages keeps
# working across our deploys (WhiteNoise serves it with a short cache lifetime).
SCRIPT_PATH = "retrieval/embed.js"


def origin_listed(origin: str) -> bool:
    """Whether any catalog allows this (normalised) origin: CORS preflights and socket handshakes
    carry no key yet, so this is all they can be checked against."""
    return Catalog.objects.filter(embed_origins__contains=[origin]).exists()


def catalog_for_key(key: object) -> Catalog | None:
    if not isinstance(key, str) or not key.startswith("pk_") or len(key) > 64:
        return None
    return Catalog.objects.select_related("shop").filter(publishable_key=key).first()


def allows(catalog: Catalog, origin: str | None) -> bool:
    return origin is not None and origin in catalog.embed_origins


def set_origins(catalog: Catalog, origins: list[str]) -> list[str]:
    """Store the catalog's allowed origins, normalised; raises ``OriginError`` for a bad one."""
    catalog.embed_origins = normalize_origins(origins)
    catalog.save(update_fields=["embed_origins"])
    return catalog.embed_origins


def rotate_key(catalog: Catalog) -> str:
    """A new publishable key; the old one stops working at once (widgets then show an error)."""
    with transaction.atomic():
        catalog.publishable_key = new_publishable_key()
        catalog.save(update_fields=["publishable_key"])
    return catalog.publishable_key


def script_url(base_url: str) -> str:
    """The widget script's absolute URL on this server (``base_url`` like https://dar.example)."""
    return base_url.rstrip("/") + "/" + settings.STATIC_URL.strip("/") + "/" + SCRIPT_PATH


def snippet(catalog: Catalog, base_url: str) -> str:
    """What a shop pastes into its page: one script tag; the widget appears where it stands."""
    return (
        f'<script src="{script_url(base_url)}" data-key="{catalog.publishable_key}" async></script>'
    )
