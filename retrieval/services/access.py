"""Who may search a catalog and who owns a search session.

A session belongs to its user when one was signed in at creation, otherwise to the Django session
key of the anonymous browser that created it. Nobody else may read it or talk in it.
"""

from __future__ import annotations

import uuid
from typing import Any

from catalog.models import Catalog
from retrieval.models import SearchSession

from .errors import SearchError
from .owner_keys import matches


def can_search(user: Any, catalog: Catalog) -> bool:
    """Public catalogs are open to everyone; private ones to their shop's admins and superusers."""
    if catalog.is_public:
        return True
    if user is None or not user.is_authenticated:
        return False
    return bool(user.is_superuser or catalog.shop.admins.filter(pk=user.pk).exists())


def owns(session: SearchSession, user: Any, session_key: str | None) -> bool:
    if session.user_id is not None:
        return bool(user is not None and user.is_authenticated and user.pk == session.user_id)
    return matches(session.session_key_hash, session_key)


def session_for(session_id: object, user: Any, session_key: str | None) -> SearchSession:
    """The session if this user/browser owns it and may still search its catalog."""
    try:
        key = uuid.UUID(str(session_id))
    except ValueError:
        raise SearchError("not_found", "No such search session.") from None
    session = SearchSession.objects.select_related("catalog__shop").filter(pk=key).first()
    if session is None:
        raise SearchError("not_found", "No such search session.")
    if not owns(session, user, session_key) or not can_search(user, session.catalog):
        raise SearchError("forbidden", "This search session belongs to someone else.")
    return session
