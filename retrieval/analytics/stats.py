"""The figures on the analysts' dashboard, aggregated in PostgreSQL.

All functions take an already scoped queryset of sessions (``scope.visible_sessions``), so the
dashboard never counts sessions the viewer may not see.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate

from retrieval.analytics.annotations import count_of, liked_exists
from retrieval.models import Feedback, SearchSession, Turn


@dataclass(frozen=True)
class StagePoint:
    day: dt.date
    p50: float
    p95: float
    turns: int


@dataclass(frozen=True)
class FeedbackDay:
    day: dt.date
    sessions: int
    with_feedback: int
    with_like: int

    @property
    def feedback_rate(self) -> float:
        return self.with_feedback / self.sessions if self.sessions else 0.0

    @property
    def like_rate(self) -> float:
        return self.with_like / self.sessions if self.sessions else 0.0


@dataclass
class Dashboard:
    sessions: int = 0
    turns: int = 0
    failed_turns: int = 0
    likes: int = 0
    dislikes: int = 0
    # number of turns -> number of sessions with that many turns
    turns_per_session: dict[int, int] = field(default_factory=dict)
    # stage name -> one point per day, oldest first
    latency: dict[str, list[StagePoint]] = field(default_factory=dict)
    feedback_by_day: list[FeedbackDay] = field(default_factory=list)

    @property
    def sessions_with_feedback(self) -> int:
        return sum(day.with_feedback for day in self.feedback_by_day)

    @property
    def feedback_rate(self) -> float:
        return self.sessions_with_feedback / self.sessions if self.sessions else 0.0


def turns_per_session(sessions: QuerySet[SearchSession]) -> dict[int, int]:
    rows = (
        sessions.order_by()
        .annotate(n=count_of(Turn))
        .values("n")
        .annotate(sessions=Count("pk"))
        .values_list("n", "sessions")
    )
    return dict(sorted((int(n), int(c)) for n, c in rows))


def latency_by_stage(sessions: QuerySet[SearchSession]) -> dict[str, list[StagePoint]]:
    """Daily p50/p95 of every stage recorded in ``Turn.timings`` (milliseconds) of done turns.

    Stage names are whatever the turn pipeline records, read with ``jsonb_each``; non-numeric
    entries are ignored.
    """
    turns = Turn.objects.filter(
        session__in=sessions.order_by().values("pk"), status=Turn.Status.DONE
    ).values("created_at", "timings")
    inner, params = turns.query.sql_with_params()
    sql = (
        "SELECT (t.created_at AT TIME ZONE %s)::date AS day, e.key,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY (e.value)::float8),"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY (e.value)::float8),"
        " count(*)"
        f" FROM ({inner}) t CROSS JOIN LATERAL jsonb_each(t.timings) e"
        " WHERE jsonb_typeof(t.timings) = 'object' AND jsonb_typeof(e.value) = 'number'"
        " GROUP BY 1, 2 ORDER BY 2, 1"
    )
    out: dict[str, list[StagePoint]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [settings.TIME_ZONE, *params])
        for day, stage, p50, p95, n in cursor.fetchall():
            out.setdefault(stage, []).append(StagePoint(day, float(p50), float(p95), int(n)))
    return out


def feedback_by_day(sessions: QuerySet[SearchSession]) -> list[FeedbackDay]:
    rows = (
        sessions.order_by()
        .annotate(
            day=TruncDate("created_at"),
            has_feedback=count_of(Feedback),
            has_like=liked_exists(),
        )
        .values("day")
        .annotate(
            n=Count("pk"),
            with_feedback=Count("pk", filter=Q(has_feedback__gt=0)),
            with_like=Count("pk", filter=Q(has_like=True)),
        )
        .order_by("day")
        .values_list("day", "n", "with_feedback", "with_like")
    )
    return [FeedbackDay(day, int(n), int(f), int(k)) for day, n, f, k in rows]


def dashboard(sessions: QuerySet[SearchSession]) -> Dashboard:
    turns = Turn.objects.filter(session__in=sessions.order_by().values("pk"))
    feedback = Feedback.objects.filter(session__in=sessions.order_by().values("pk"))
    totals = turns.aggregate(n=Count("pk"), failed=Count("pk", filter=Q(status=Turn.Status.FAILED)))
    votes = feedback.aggregate(
        likes=Count("pk", filter=Q(value=1)), dislikes=Count("pk", filter=Q(value=-1))
    )
    return Dashboard(
        sessions=sessions.count(),
        turns=totals["n"],
        failed_turns=totals["failed"],
        likes=votes["likes"],
        dislikes=votes["dislikes"],
        turns_per_session=turns_per_session(sessions),
        latency=latency_by_stage(sessions),
        feedback_by_day=feedback_by_day(sessions),
    )
