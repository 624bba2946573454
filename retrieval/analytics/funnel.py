"""The search funnel: how far sessions (and their turns) get, from a first message to a click.

Stages, each counted in sessions and in turns (a stage's turns are the turns that reached it
themselves; feedback and clicks are attributed to the turn whose results the shopper saw):

1. searched: sessions with at least one turn (every turn);
2. got results: sessions with a turn that finished (done turns);
3. rated a result: sessions with a like or dislike (turns with feedback);
4. opened a product: sessions with a product click (turns with a click).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from retrieval.models import Feedback, ProductClick, SearchSession, Turn


@dataclass(frozen=True)
class Stage:
    key: str
    label: str
    sessions: int
    turns: int
    # share of the first stage's sessions that reached this one (0..1)
    of_first: float


def funnel(sessions: QuerySet[SearchSession]) -> list[Stage]:
    """``sessions`` must already be limited to sessions with turns (``stats.with_turns``)."""
    ids = sessions.order_by().values("pk")
    # Exists in the aggregates' filters, not as annotations: an aggregate over an annotation
    # makes Django wrap the query, and the wrapper loses the annotation's alias.
    rated_turn = Exists(Feedback.objects.filter(turn=OuterRef("pk")))
    clicked_turn = Exists(ProductClick.objects.filter(turn=OuterRef("pk")))
    turn_counts = Turn.objects.filter(session__in=ids).aggregate(
        all=Count("pk"),
        done=Count("pk", filter=Q(status=Turn.Status.DONE)),
        rated=Count("pk", filter=Q(rated_turn)),
        clicked=Count("pk", filter=Q(clicked_turn)),
    )
    done = Exists(Turn.objects.filter(session=OuterRef("pk"), status=Turn.Status.DONE))
    rated = Exists(Feedback.objects.filter(session=OuterRef("pk")))
    clicked = Exists(ProductClick.objects.filter(session=OuterRef("pk")))
    session_counts = SearchSession.objects.filter(pk__in=ids).aggregate(
        all=Count("pk"),
        done=Count("pk", filter=Q(done)),
        rated=Count("pk", filter=Q(rated)),
        clicked=Count("pk", filter=Q(clicked)),
    )
    labels = (
        ("all", "searched (sent a message)"),
        ("done", "got results"),
        ("rated", "rated a result"),
        ("clicked", "opened a product"),
    )
    first = session_counts["all"]
    return [
        Stage(
            key,
            label,
            session_counts[key],
            turn_counts[key],
            session_counts[key] / first if first else 0.0,
        )
        for key, label in labels
    ]
