"""Turns that found nothing useful, each listed with the reasons it is listed for.

A finished turn (done or failed) is listed when any of these holds:

- ``failed``: the turn failed (its error code says why); the shopper got no final results;
- ``no_results``: it finished without a single final result;
- ``low_score``: its best final result scored below ``DAR_ANALYTICS_LOW_SCORE``;
- ``fallback``: the language model's refinement was unusable, so the shopper's own words were
  searched (``Turn.refinement_fallback``);
- ``no_interaction``: the shopper left after it: it is the session's last turn and nobody rated or
  opened any of its results.

A turn followed by another message is not "no interaction": refining is the search working.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery

from retrieval.models import Feedback, ProductClick, Turn, TurnResult

LIST_LIMIT = 100

REASONS = {
    "failed": "failed",
    "no_results": "no results",
    "low_score": "low top score",
    "fallback": "fallback used",
    "no_interaction": "no interaction",
}


@dataclass(frozen=True)
class UselessTurn:
    session_id: uuid.UUID
    catalog: str
    index: int
    created_at: dt.datetime
    message: str
    refined_query: str
    top_score: float | None
    error_code: str
    reasons: tuple[str, ...]

    @property
    def reason_labels(self) -> list[str]:
        return [REASONS[r] for r in self.reasons]


def _annotated(turns: QuerySet[Turn]) -> QuerySet[Turn]:
    final = TurnResult.objects.filter(turn=OuterRef("pk"), final=True)
    return turns.annotate(
        top_score=Subquery(final.order_by("-score").values("score")[:1]),
        has_results=Exists(final),
        rated=Exists(Feedback.objects.filter(turn=OuterRef("pk"))),
        clicked=Exists(ProductClick.objects.filter(turn=OuterRef("pk"))),
        followed=Exists(
            Turn.objects.filter(session=OuterRef("session"), index__gt=OuterRef("index"))
        ),
    )


def _conditions() -> dict[str, Q]:
    done = Q(status=Turn.Status.DONE)
    return {
        "failed": Q(status=Turn.Status.FAILED),
        "no_results": done & Q(has_results=False),
        "low_score": done & Q(top_score__lt=settings.DAR_ANALYTICS_LOW_SCORE),
        "fallback": Q(refinement_fallback=True),
        "no_interaction": done & Q(followed=False, rated=False, clicked=False),
    }


def nothing_useful(turns: QuerySet[Turn]) -> QuerySet[Turn]:
    """The listed turns among ``turns``, newest first."""
    finished = Q(status__in=[Turn.Status.DONE, Turn.Status.FAILED])
    anything = Q()
    for condition in _conditions().values():
        anything |= condition
    return (
        _annotated(turns)
        .filter(finished & anything)
        .select_related("session__catalog")
        .order_by("-created_at", "-pk")
    )


def reasons_of(turn: Turn) -> tuple[str, ...]:
    """The reasons an annotated turn (from ``nothing_useful``) is listed, in REASONS order."""
    top: float | None = getattr(turn, "top_score", None)
    done = turn.status == Turn.Status.DONE
    flags = {
        "failed": turn.status == Turn.Status.FAILED,
        "no_results": done and not getattr(turn, "has_results", False),
        "low_score": done and top is not None and top < settings.DAR_ANALYTICS_LOW_SCORE,
        "fallback": turn.refinement_fallback,
        "no_interaction": done
        and not any(getattr(turn, name, False) for name in ("followed", "rated", "clicked")),
    }
    return tuple(reason for reason in REASONS if flags[reason])


def describe(turn: Turn) -> UselessTurn:
    return UselessTurn(
        session_id=turn.session_id,
        catalog=turn.session.catalog.name,
        index=turn.index,
        created_at=turn.created_at,
        message=turn.message,
        refined_query=turn.refined_query,
        top_score=getattr(turn, "top_score", None),
        error_code=turn.error_code,
        reasons=reasons_of(turn),
    )
