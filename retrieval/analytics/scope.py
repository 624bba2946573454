"""Which search sessions a staff user may review.

Superusers and holders of ``retrieval.view_all_sessions`` (the Analysts group, see migration
0003) see every session; any other staff user sees only the sessions of catalogs whose shop lists
them in ``Shop.admins``. Every admin page, export and dashboard figure goes through here, so a
shop admin can never read another shop's shoppers.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.db.models import QuerySet

from catalog.models import Catalog
from retrieval.models import Feedback, SearchSession, Turn

VIEW_ALL_PERMISSION = "retrieval.view_all_sessions"
ANALYSTS_GROUP = "Analysts"

# request.user in the admin (AUTH_USER_MODEL is the stock user model).
User = AuthUser | AnonymousUser


def sees_all(user: User) -> bool:
    if not user.is_active:
        return False
    return bool(getattr(user, "is_superuser", False)) or user.has_perm(VIEW_ALL_PERMISSION)


def visible_catalogs(user: User) -> QuerySet[Catalog]:
    if sees_all(user):
        return Catalog.objects.all()
    if not user.is_authenticated:
        return Catalog.objects.none()
    return Catalog.objects.filter(shop__admins=user)


def visible_sessions(user: User) -> QuerySet[SearchSession]:
    if sees_all(user):
        return SearchSession.objects.all()
    if not user.is_authenticated:
        return SearchSession.objects.none()
    return SearchSession.objects.filter(catalog__shop__admins=user)


def visible_turns(user: User) -> QuerySet[Turn]:
    if sees_all(user):
        return Turn.objects.all()
    if not user.is_authenticated:
        return Turn.objects.none()
    return Turn.objects.filter(session__catalog__shop__admins=user)


def visible_feedback(user: User) -> QuerySet[Feedback]:
    if sees_all(user):
        return Feedback.objects.all()
    if not user.is_authenticated:
        return Feedback.objects.none()
    return Feedback.objects.filter(session__catalog__shop__admins=user)
