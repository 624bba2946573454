"""Shops, catalogs and hand edits of items: every write to them outside an import or a sync.

New items come in through ``ingest`` (files) and ``sync`` (feeds); embedding statuses are written
by ``embedding``. Everything else that creates, changes or deletes a shop, a catalog or an item
(the admin, the REST API, the management commands, the evaluation, the benchmarks) calls this
module, so that a rule about such a write lives in one place:

* an item whose title or description changed gets its product text re-embedded (its text
  vector would otherwise describe the old text);
* a shop or catalog named by slug is found or created in one transaction, with the catalog
  looked up by its slug alone (slugs are unique across shops).

Deleting an item also deletes its stored file, once the delete commits (``catalog.signals``: a
catalog's cascade deletes its items without calling this module).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from catalog.models import Catalog, CatalogItem, Shop

from . import embedding

# The item fields whose change makes its product-text vector outdated (``product_text``).
TEXT_FIELDS = frozenset({"title", "description"})


# --- Shops -----------------------------------------------------------------------------------


def ensure_shop(slug: str, name: str = "") -> Shop:
    """The shop with this slug, created (named ``name``, else the slug) if there is none."""
    shop, _ = Shop.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    return shop


def save_shop(shop: Shop) -> Shop:
    shop.save()
    return shop


def add_shop_admin(shop: Shop, user: Any) -> None:
    shop.admins.add(user)


def delete_shops(shops: QuerySet[Shop] | Iterable[Shop]) -> None:
    """Delete these shops with their catalogs and items (the items' files follow on commit)."""
    _delete(shops)


# --- Catalogs --------------------------------------------------------------------------------


def ensure_catalog(
    shop_slug: str,
    catalog_slug: str,
    *,
    shop_name: str = "",
    name: str = "",
    description: str = "",
    is_public: bool = True,
) -> tuple[Catalog, bool]:
    """(the catalog with this slug, whether it was created now).

    A new catalog goes into the shop ``shop_slug`` (created if missing); the other arguments only
    describe a new catalog: an existing one is returned as it is, whatever its shop.
    """
    with transaction.atomic():
        shop = ensure_shop(shop_slug, shop_name)
        return Catalog.objects.get_or_create(
            slug=catalog_slug,
            defaults={
                "shop": shop,
                "name": name or catalog_slug,
                "description": description,
                "is_public": is_public,
            },
        )


def create_catalog(**fields: Any) -> Catalog:
    """A new catalog from model field values (``shop`` a ``Shop``)."""
    return Catalog.objects.create(**fields)


def save_catalog(catalog: Catalog) -> Catalog:
    catalog.save()
    return catalog


def update_catalog(catalog: Catalog, **fields: Any) -> Catalog:
    for name, value in fields.items():
        setattr(catalog, name, value)
    return save_catalog(catalog)


def delete_catalogs(catalogs: QuerySet[Catalog] | Iterable[Catalog]) -> None:
    """Delete these catalogs with their items (the items' files follow on commit)."""
    _delete(catalogs)


def delete_catalog(catalog: Catalog) -> None:
    delete_catalogs([catalog])


# --- Items -----------------------------------------------------------------------------------


def text_changed(changed: Iterable[str]) -> bool:
    """Whether a change of these fields makes the item's product-text vector outdated."""
    return bool(TEXT_FIELDS & set(changed))


def save_item(item: CatalogItem, changed: Iterable[str]) -> bool:
    """Save a hand edit of an existing item (``changed``: the fields edited); returns whether it
    was queued for re-embedding, which it is when its title or description changed."""
    with transaction.atomic():
        item.save()
        if not text_changed(changed):
            return False
        embedding.reembed_items([item.pk])  # the product-text vector follows the new text
    return True


def add_items(items: Sequence[CatalogItem], *, batch_size: int = 2000) -> list[CatalogItem]:
    """Insert items that come with everything set and whose files live elsewhere (the
    evaluation's corpus images), in batches; nothing is stored or queued for embedding."""
    created: list[CatalogItem] = []
    for start in range(0, len(items), batch_size):
        created += CatalogItem.objects.bulk_create(items[start : start + batch_size])
    return created


def delete_items(items: QuerySet[CatalogItem] | Iterable[CatalogItem]) -> None:
    """Delete items with their vectors; each one's stored file follows on commit."""
    _delete(items)


def delete_item(item: CatalogItem) -> None:
    delete_items([item])


def _delete(objects: QuerySet[Any] | Iterable[Any]) -> None:
    with transaction.atomic():
        if isinstance(objects, QuerySet):
            objects.delete()  # one collector for all of them, as the admin's bulk delete does
        else:
            for obj in objects:
                obj.delete()
