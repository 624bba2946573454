"""Who may see and change what: a shop's admins own its catalogs; superusers see everything."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from catalog.models import Catalog, CatalogItem, Shop


def _is_super(user: Any) -> bool:
    return bool(getattr(user, "is_active", False) and getattr(user, "is_superuser", False))


def shops_for(user: Any) -> QuerySet[Shop]:
    if _is_super(user):
        return Shop.objects.all()
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return Shop.objects.none()
    return Shop.objects.filter(admins=user)


def catalogs_for(user: Any) -> QuerySet[Catalog]:
    if _is_super(user):
        return Catalog.objects.all()
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return Catalog.objects.none()
    return Catalog.objects.filter(shop__admins=user)


def items_for(user: Any) -> QuerySet[CatalogItem]:
    if _is_super(user):
        return CatalogItem.objects.all()
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return CatalogItem.objects.none()
    return CatalogItem.objects.filter(catalog__shop__admins=user)


def administers_any(user: Any) -> bool:
    return _is_super(user) or shops_for(user).exists()


def can_manage(user: Any, catalog: Catalog | None) -> bool:
    if catalog is None:
        return administers_any(user)
    return _is_super(user) or (
        getattr(user, "is_authenticated", False)
        and user.is_active
        and catalog.shop.admins.filter(pk=user.pk).exists()
    )
