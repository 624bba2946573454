"""Top queries: what shoppers typed, and what the language model made of it, counted.

Queries are normalised before counting, in SQL: case folded, runs of white space collapsed to one
space, leading/trailing space and trailing punctuation (``. , ! ? ; :``) removed. So "Red dress",
"red  dress." and " RED DRESS!" count as one query, "red dress" (shown normalised).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import CharField, Count, F, Func, QuerySet, Value
from django.db.models.functions import Lower, Trim

from retrieval.models import Turn

TOP_N = 20


@dataclass(frozen=True)
class QueryCount:
    query: str
    turns: int
    sessions: int


def normalised(field: str) -> Func:
    collapsed = Func(
        F(field),
        Value(r"\s+"),
        Value(" "),
        Value("g"),
        function="regexp_replace",
        output_field=CharField(),
    )
    unpunctuated = Func(
        Trim(collapsed),
        Value(r"[[:space:].,!?;:]+$"),
        Value(""),
        function="regexp_replace",
        output_field=CharField(),
    )
    return Lower(Trim(unpunctuated))


def _top(turns: QuerySet[Turn], field: str, limit: int) -> list[QueryCount]:
    rows = (
        turns.order_by()
        .annotate(q=normalised(field))
        .exclude(q="")
        .values("q")
        .annotate(n=Count("pk"), s=Count("session", distinct=True))
        .order_by("-n", "q")
        .values_list("q", "n", "s")[:limit]
    )
    return [QueryCount(q, int(n), int(s)) for q, n, s in rows]


def top_typed(turns: QuerySet[Turn], limit: int = TOP_N) -> list[QueryCount]:
    """The shoppers' own messages, every turn's."""
    return _top(turns, "message", limit)


def top_refined(turns: QuerySet[Turn], limit: int = TOP_N) -> list[QueryCount]:
    """The descriptions the language model refined the dialogue into (turns that have one)."""
    return _top(turns, "refined_query", limit)
