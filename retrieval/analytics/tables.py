"""Each table of the dashboard as rows, for its CSV and JSON exports.

The rows are the figures the page shows (``stats.Dashboard``), except the "nothing useful" list,
which the page cuts at ``outcomes.LIST_LIMIT`` and the export gives in full.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.db.models import QuerySet

from retrieval.analytics import outcomes, stats
from retrieval.models import SearchSession

TABLES: dict[str, list[str]] = {
    "funnel": ["stage", "label", "sessions", "turns", "share_of_first"],
    "end_to_end": ["bucket_start", "turns", "p50_ms", "p95_ms"],
    "stages": ["stage", "bucket_start", "turns", "p50_ms", "p95_ms"],
    "feedback": ["bucket_start", "sessions", "with_feedback", "with_like"],
    "fallback": ["bucket_start", "done_turns", "fallback_turns", "rate"],
    "top_typed": ["query", "turns", "sessions"],
    "top_refined": ["query", "turns", "sessions"],
    "nothing_useful": [
        "session_id",
        "catalog",
        "turn",
        "created_at",
        "message",
        "refined_query",
        "top_score",
        "error_code",
        "reasons",
    ],
}


def _useless_row(turn: outcomes.UselessTurn) -> dict[str, Any]:
    return {
        "session_id": str(turn.session_id),
        "catalog": turn.catalog,
        "turn": turn.index,
        "created_at": turn.created_at.isoformat(),
        "message": turn.message,
        "refined_query": turn.refined_query,
        "top_score": turn.top_score,
        "error_code": turn.error_code,
        "reasons": list(turn.reasons),
    }


def rows(
    name: str, figures: stats.Dashboard, sessions: QuerySet[SearchSession]
) -> Iterator[dict[str, Any]]:
    """The rows of table ``name`` (a key of TABLES); ``sessions`` is the filtered set."""
    if name == "funnel":
        for s in figures.funnel:
            yield {
                "stage": s.key,
                "label": s.label,
                "sessions": s.sessions,
                "turns": s.turns,
                "share_of_first": round(s.of_first, 4),
            }
    elif name == "end_to_end":
        for p in figures.end_to_end:
            yield {
                "bucket_start": p.at.isoformat(),
                "turns": p.turns,
                "p50_ms": p.p50,
                "p95_ms": p.p95,
            }
    elif name == "stages":
        for stage, points in figures.latency.items():
            for p in points:
                yield {
                    "stage": stage,
                    "bucket_start": p.at.isoformat(),
                    "turns": p.turns,
                    "p50_ms": p.p50,
                    "p95_ms": p.p95,
                }
    elif name == "feedback":
        for d in figures.feedback_over_time:
            yield {
                "bucket_start": d.at.isoformat(),
                "sessions": d.sessions,
                "with_feedback": d.with_feedback,
                "with_like": d.with_like,
            }
    elif name == "fallback":
        for f in figures.fallback_over_time:
            yield {
                "bucket_start": f.at.isoformat(),
                "done_turns": f.turns,
                "fallback_turns": f.fallback,
                "rate": round(f.rate, 4),
            }
    elif name in ("top_typed", "top_refined"):
        for q in figures.top_typed if name == "top_typed" else figures.top_refined:
            yield {"query": q.query, "turns": q.turns, "sessions": q.sessions}
    elif name == "nothing_useful":
        turns = stats.turns_of(stats.with_turns(sessions))
        for turn in outcomes.nothing_useful(turns).iterator(chunk_size=500):
            yield _useless_row(outcomes.describe(turn))
    else:
        raise KeyError(name)
