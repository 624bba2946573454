"""Creating search sessions and listing the catalogs a shopper may search."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from catalog.models import Catalog
from dar_site.input_ids import row_id
from dar_site.storable_text import unstorable_reason
from retrieval.models import SearchSession

from .access import can_search
from .errors import SearchError
from .owner_keys import hash_session_key


def searchable_catalogs(user: Any) -> QuerySet[Catalog]:
    catalogs = Catalog.objects.select_related("shop").order_by("name")
    if user is not None and user.is_authenticated:
        if user.is_superuser:
            return catalogs
        return catalogs.filter(Q(is_public=True) | Q(shop__admins=user)).distinct()
    return catalogs.filter(is_public=True)


def catalog_for(ref: Any, user: Any) -> Catalog:
    """A catalog by slug (or numeric id) that this user may search."""
    if isinstance(ref, str) and unstorable_reason(ref):
        raise SearchError("invalid", "The catalog must be a catalog's slug or numeric id.")
    catalog = None
    if isinstance(ref, str) and ref.strip():
        catalog = Catalog.objects.select_related("shop").filter(slug=ref.strip()).first()
    pk = row_id(ref) if catalog is None else None
    if pk is not None:
        catalog = Catalog.objects.select_related("shop").filter(pk=pk).first()
    # A private catalog answers exactly like a missing one, so slugs cannot be probed.
    if catalog is None or not can_search(user, catalog):
        raise SearchError("not_found", "No such catalog.")
    return catalog


def create_session(catalog: Catalog, user: Any, session_key: str | None) -> SearchSession:
    """A new search session owned by the signed-in user, else by the browser's session key."""
    if not can_search(user, catalog):
        raise SearchError("not_found", "No such catalog.")
    signed_in = user is not None and user.is_authenticated
    if not signed_in and not session_key:
        raise SearchError("forbidden", "Cookies are needed to keep an anonymous search session.")
    return SearchSession.objects.create(
        catalog=catalog,
        user=user if signed_in else None,
        session_key_hash="" if signed_in or not session_key else hash_session_key(session_key),
    )
