"""The figures on the analysts' dashboard, aggregated in PostgreSQL.

All functions take an already scoped queryset of sessions (``scope.visible_sessions``), so the
dashboard never counts sessions the viewer may not see. A session counts once it has a turn: a
session is created when the search page opens, before the shopper types anything, so sessions
without turns are visits, not searches, and would dilute every rate.

Figures over time are per bucket of the fitted time axis (``timeaxis``: hours for a day of data,
days for weeks, weeks beyond), keyed by the bucket's start in local time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, Max, Min, OuterRef, Q, QuerySet
from django.db.models.functions import Trunc
from django.utils import timezone

from retrieval.analytics import funnel, outcomes, queries, timeaxis
from retrieval.analytics.annotations import count_of, liked_exists
from retrieval.models import Feedback, SearchSession, Turn

# The queue-inclusive latency: from the message's arrival (the turn's creation) to the end of the
# turn (its final results, and the question when one is asked). The pipeline's "total" timing
# starts only when a worker picks the turn up, so it leaves out the wait in the queue.
END_TO_END = "end to end (queue included)"


@dataclass(frozen=True)
class StagePoint:
    at: dt.datetime  # the bucket's start, local time
    p50: float
    p95: float
    turns: int


@dataclass(frozen=True)
class FeedbackDay:
    """Sessions started in one bucket of the axis, and how many of them rated a result."""

    at: dt.datetime
    sessions: int
    with_feedback: int
    with_like: int

    @property
    def feedback_rate(self) -> float:
        return self.with_feedback / self.sessions if self.sessions else 0.0

    @property
    def like_rate(self) -> float:
        return self.with_like / self.sessions if self.sessions else 0.0


@dataclass(frozen=True)
class FallbackPoint:
    """Done turns of one bucket, and how many fell back to the shopper's own words."""

    at: dt.datetime
    turns: int
    fallback: int

    @property
    def rate(self) -> float:
        return self.fallback / self.turns if self.turns else 0.0


@dataclass
class Dashboard:
    sessions: int = 0  # sessions with at least one turn
    turns: int = 0
    failed_turns: int = 0
    likes: int = 0
    dislikes: int = 0
    axis: timeaxis.TimeAxis | None = None  # None when there is no data
    # number of turns -> number of sessions with that many turns (1 and up)
    turns_per_session: dict[int, int] = field(default_factory=dict)
    # stage name -> one point per bucket, oldest first
    latency: dict[str, list[StagePoint]] = field(default_factory=dict)
    # queue-inclusive latency of done turns, per bucket, and over the whole period
    end_to_end: list[StagePoint] = field(default_factory=list)
    end_to_end_p50: float | None = None
    end_to_end_p95: float | None = None
    feedback_over_time: list[FeedbackDay] = field(default_factory=list)
    fallback_over_time: list[FallbackPoint] = field(default_factory=list)
    funnel: list[funnel.Stage] = field(default_factory=list)
    top_typed: list[queries.QueryCount] = field(default_factory=list)
    top_refined: list[queries.QueryCount] = field(default_factory=list)
    nothing_useful: list[outcomes.UselessTurn] = field(default_factory=list)
    nothing_useful_total: int = 0

    @property
    def feedback_by_day(self) -> list[FeedbackDay]:
        """The feedback figures per bucket (a day or shorter; the name predates the buckets)."""
        return self.feedback_over_time

    @property
    def sessions_with_feedback(self) -> int:
        return sum(day.with_feedback for day in self.feedback_over_time)

    @property
    def feedback_rate(self) -> float:
        return self.sessions_with_feedback / self.sessions if self.sessions else 0.0

    @property
    def done_turns(self) -> int:
        return sum(p.turns for p in self.fallback_over_time)

    @property
    def fallback_turns(self) -> int:
        return sum(p.fallback for p in self.fallback_over_time)

    @property
    def fallback_rate(self) -> float:
        return self.fallback_turns / self.done_turns if self.done_turns else 0.0


def with_turns(sessions: QuerySet[SearchSession]) -> QuerySet[SearchSession]:
    """The sessions in which the shopper sent at least one message."""
    return sessions.filter(Exists(Turn.objects.filter(session=OuterRef("pk"))))


def turns_of(sessions: QuerySet[SearchSession]) -> QuerySet[Turn]:
    return Turn.objects.filter(session__in=sessions.order_by().values("pk"))


def _local(moment: dt.datetime) -> dt.datetime:
    return timezone.make_naive(moment) if timezone.is_aware(moment) else moment


def fit_axis(sessions: QuerySet[SearchSession]) -> timeaxis.TimeAxis | None:
    """The time axis of the data: the sessions' starts and their turns' arrivals."""
    spans = [
        sessions.order_by().aggregate(first=Min("created_at"), last=Max("created_at")),
        turns_of(sessions).aggregate(first=Min("created_at"), last=Max("created_at")),
    ]
    moments = [_local(s[k]) for s in spans for k in ("first", "last") if s[k] is not None]
    if not moments:
        return None
    return timeaxis.fit(min(moments), max(moments))


def turns_per_session(sessions: QuerySet[SearchSession]) -> dict[int, int]:
    rows = (
        sessions.order_by()
        .annotate(n=count_of(Turn))
        .values("n")
        .annotate(sessions=Count("pk"))
        .values_list("n", "sessions")
    )
    return dict(sorted((int(n), int(c)) for n, c in rows if n))


def _bucketed(turns: QuerySet[Turn, Any], axis: timeaxis.TimeAxis, select: str, rest: str) -> Any:
    """Run ``SELECT <bucket>, <select> FROM (turns) t <rest>`` and return the rows.

    ``turns`` must select ``created_at`` (and whatever ``select`` reads); the bucket is the
    start of the turn's arrival bucket in local time.
    """
    inner, params = turns.query.sql_with_params()
    sql = (
        f"SELECT date_trunc(%s, t.created_at AT TIME ZONE %s) AS at, {select}"
        f" FROM ({inner}) t {rest}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [axis.bucket, settings.TIME_ZONE, *params])
        return cursor.fetchall()


def latency_by_stage(
    sessions: QuerySet[SearchSession], axis: timeaxis.TimeAxis
) -> dict[str, list[StagePoint]]:
    """p50/p95 per bucket of every stage recorded in ``Turn.timings`` (milliseconds) of done
    turns.

    Stage names are whatever the turn pipeline records, read with ``jsonb_each``; non-numeric
    entries are ignored.
    """
    turns = turns_of(sessions).filter(status=Turn.Status.DONE).values("created_at", "timings")
    rows = _bucketed(
        turns,
        axis,
        "e.key,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY (e.value)::float8),"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY (e.value)::float8),"
        " count(*)",
        "CROSS JOIN LATERAL jsonb_each(t.timings) e"
        " WHERE jsonb_typeof(t.timings) = 'object' AND jsonb_typeof(e.value) = 'number'"
        " GROUP BY 1, 2 ORDER BY 2, 1",
    )
    out: dict[str, list[StagePoint]] = {}
    for at, stage, p50, p95, n in rows:
        out.setdefault(stage, []).append(StagePoint(at, float(p50), float(p95), int(n)))
    return out


_E2E_MS = "extract(epoch FROM (t.finished_at - t.created_at)) * 1000"


def _done_with_end(sessions: QuerySet[SearchSession]) -> QuerySet[Turn]:
    return turns_of(sessions).filter(status=Turn.Status.DONE, finished_at__isnull=False)


def end_to_end_by_bucket(
    sessions: QuerySet[SearchSession], axis: timeaxis.TimeAxis
) -> list[StagePoint]:
    """Queue-inclusive latency (``END_TO_END``) of done turns: p50/p95 per bucket."""
    turns = _done_with_end(sessions).values("created_at", "finished_at")
    rows = _bucketed(
        turns,
        axis,
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {_E2E_MS}),"
        f" percentile_cont(0.95) WITHIN GROUP (ORDER BY {_E2E_MS}), count(*)",
        "GROUP BY 1 ORDER BY 1",
    )
    return [StagePoint(at, float(p50), float(p95), int(n)) for at, p50, p95, n in rows]


def end_to_end_overall(sessions: QuerySet[SearchSession]) -> tuple[float | None, float | None]:
    """p50 and p95 of the queue-inclusive latency over the whole period."""
    turns = _done_with_end(sessions).values("created_at", "finished_at")
    inner, params = turns.query.sql_with_params()
    sql = (
        f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY {_E2E_MS}),"
        f" percentile_cont(0.95) WITHIN GROUP (ORDER BY {_E2E_MS}) FROM ({inner}) t"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        p50, p95 = cursor.fetchone()
    return (None if p50 is None else float(p50), None if p95 is None else float(p95))


def fallback_by_bucket(
    sessions: QuerySet[SearchSession], axis: timeaxis.TimeAxis
) -> list[FallbackPoint]:
    """Done turns per bucket and how many of them used the fallback (the LLM's refinement was
    unusable, so the shopper's own words were searched)."""
    turns = turns_of(sessions).filter(status=Turn.Status.DONE)
    rows = _bucketed(
        turns.values("created_at", "refinement_fallback"),
        axis,
        "count(*), count(*) FILTER (WHERE t.refinement_fallback)",
        "GROUP BY 1 ORDER BY 1",
    )
    return [FallbackPoint(at, int(n), int(f)) for at, n, f in rows]


def feedback_by_bucket(
    sessions: QuerySet[SearchSession], axis: timeaxis.TimeAxis
) -> list[FeedbackDay]:
    rows = (
        sessions.order_by()
        .annotate(
            at=Trunc("created_at", axis.bucket),
            has_feedback=count_of(Feedback),
            has_like=liked_exists(),
        )
        .values("at")
        .annotate(
            n=Count("pk"),
            with_feedback=Count("pk", filter=Q(has_feedback__gt=0)),
            with_like=Count("pk", filter=Q(has_like=True)),
        )
        .order_by("at")
        .values_list("at", "n", "with_feedback", "with_like")
    )
    return [FeedbackDay(_local(at), int(n), int(f), int(k)) for at, n, f, k in rows]


def dashboard(sessions: QuerySet[SearchSession]) -> Dashboard:
    sessions = with_turns(sessions)
    axis = fit_axis(sessions)
    if axis is None:
        return Dashboard()
    turns = turns_of(sessions)
    feedback = Feedback.objects.filter(session__in=sessions.order_by().values("pk"))
    totals = turns.aggregate(n=Count("pk"), failed=Count("pk", filter=Q(status=Turn.Status.FAILED)))
    votes = feedback.aggregate(
        likes=Count("pk", filter=Q(value=1)), dislikes=Count("pk", filter=Q(value=-1))
    )
    p50, p95 = end_to_end_overall(sessions)
    useless = outcomes.nothing_useful(turns)
    return Dashboard(
        sessions=sessions.count(),
        turns=totals["n"],
        failed_turns=totals["failed"],
        likes=votes["likes"],
        dislikes=votes["dislikes"],
        axis=axis,
        turns_per_session=turns_per_session(sessions),
        latency=latency_by_stage(sessions, axis),
        end_to_end=end_to_end_by_bucket(sessions, axis),
        end_to_end_p50=p50,
        end_to_end_p95=p95,
        feedback_over_time=feedback_by_bucket(sessions, axis),
        fallback_over_time=fallback_by_bucket(sessions, axis),
        funnel=funnel.funnel(sessions),
        top_typed=queries.top_typed(turns),
        top_refined=queries.top_refined(turns),
        nothing_useful=[outcomes.describe(t) for t in useless[: outcomes.LIST_LIMIT]],
        nothing_useful_total=useless.count(),
    )
