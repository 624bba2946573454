"""A deleted item takes its file with it (after commit: a rolled-back delete keeps both).

The path is content-addressed per catalog and (catalog, sha256) is unique, so no other item can
point at the same file.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from catalog.models import CatalogItem


@receiver(post_delete, sender=CatalogItem, dispatch_uid="catalog_item_delete_file")
def delete_item_file(sender: type[CatalogItem], instance: CatalogItem, **_: Any) -> None:
    name = instance.image.name
    if not name:
        return
    storage = instance.image.storage

    def remove() -> None:
        if not CatalogItem.objects.filter(image=name).exists():
            storage.delete(name)

    transaction.on_commit(remove)
