"""Per-session figures computed in the database (turn counts, feedback, outcome).

Counts are correlated subqueries rather than ``Count`` over joins: a session joins to both turns
and feedback, and counting over that join would multiply the two.
"""

from __future__ import annotations

from typing import Any

from django.db.models import (
    Count,
    Exists,
    IntegerField,
    Model,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce

from retrieval.models import Feedback, SearchSession, Turn


def count_of(model: type[Model], condition: Q | None = None) -> Coalesce:
    """Number of ``model`` rows pointing at the outer session (0 when there are none)."""
    rows: QuerySet[Any] = model._default_manager.filter(session=OuterRef("pk"))
    if condition is not None:
        rows = rows.filter(condition)
    counted = rows.order_by().values("session").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def liked_exists() -> Exists:
    return Exists(Feedback.objects.filter(session=OuterRef("pk"), value=1))


def with_figures(sessions: QuerySet[SearchSession]) -> QuerySet[SearchSession]:
    """Annotate ``n_turns``, ``n_failed``, ``n_likes``, ``n_dislikes`` and ``liked``."""
    return sessions.annotate(
        n_turns=count_of(Turn),
        n_failed=count_of(Turn, Q(status=Turn.Status.FAILED)),
        n_likes=count_of(Feedback, Q(value=1)),
        n_dislikes=count_of(Feedback, Q(value=-1)),
        liked=liked_exists(),
    )
