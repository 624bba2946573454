"""Likes and dislikes on results; they steer the session's next turns (Rocchio, see pipeline)."""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import OuterRef

from catalog.models import CatalogItem
from dar_site.input_ids import row_id
from retrieval.models import Feedback, SearchSession

from . import events
from .errors import SearchError


def _item_id(value: Any) -> int:
    item_id = row_id(value)
    if item_id is None:
        raise SearchError("bad_feedback", "Feedback needs the id of a result item.")
    return item_id


def record_feedback(session: SearchSession, item: Any, value: Any) -> dict[str, Any]:
    """Store the shopper's opinion of an item: 1 like, -1 dislike, 0 takes it back.

    The latest opinion of an item replaces the earlier one. It applies from the next turn on.
    """
    item_id = _item_id(item)
    if isinstance(value, bool) or value not in (1, -1, 0):
        raise SearchError("bad_feedback", "Feedback value must be 1 (like) or -1 (dislike).")
    if not CatalogItem.objects.filter(pk=item_id, catalog_id=session.catalog_id).exists():
        raise SearchError("bad_feedback", f"Item {item_id} is not in this catalog.")
    if value == 0:
        Feedback.objects.filter(session=session, item_id=item_id).delete()
    else:
        latest = session.turns.order_by("-index").first()
        Feedback.objects.update_or_create(
            session=session, item_id=item_id, defaults={"value": value, "turn": latest}
        )
    event = {"type": "feedback", "turn": None, "item": item_id, "value": value}
    events.emit(session.pk, event)
    return event


def feedback_items(session_id: Any) -> tuple[list[int], list[int]]:
    """(liked, disliked) item ids of a session."""
    rows = Feedback.objects.filter(session_id=session_id).values_list("item_id", "value")
    liked = [item for item, value in rows if value > 0]
    disliked = [item for item, value in rows if value < 0]
    return liked, disliked


def feedback_subqueries(session: str = "session_id") -> tuple[ArraySubquery, ArraySubquery]:
    """The same as ``feedback_items``, as two expressions (liked, disliked) for rows whose field
    ``session`` is the session: annotated, they are read with those rows, in the same statement."""
    of_session = Feedback.objects.filter(session_id=OuterRef(session)).order_by("pk")
    return (
        ArraySubquery(of_session.filter(value__gt=0).values("item_id")),
        ArraySubquery(of_session.filter(value__lt=0).values("item_id")),
    )
