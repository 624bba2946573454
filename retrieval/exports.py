"""Streamed CSV and JSON exports of search sessions and their turns, for the analysts.

Rows are produced from database iterators in chunks and written out as they come, so exporting a
large date range neither holds it in memory nor times out before the first byte.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from django.db.models import Prefetch, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from retrieval.analytics.annotations import with_figures
from retrieval.models import Feedback, SearchSession, Turn, TurnResult

Kind = Literal["sessions", "turns"]
Format = Literal["csv", "json"]
KINDS: tuple[Kind, ...] = ("sessions", "turns")
FORMATS: tuple[Format, ...] = ("csv", "json")

# How many final results of a turn the export lists (the top of the ranking the shopper saw).
TOP_RESULTS = 10
_CHUNK = 500

SESSION_FIELDS = [
    "id",
    "created_at",
    "shop",
    "catalog",
    "user_id",
    "turns",
    "failed_turns",
    "likes",
    "dislikes",
    "liked",
    "first_message",
]
TURN_FIELDS = [
    "session_id",
    "catalog",
    "index",
    "status",
    "created_at",
    "finished_at",
    "message",
    "refined_query",
    "refinement_fallback",
    "prompts",
    "question",
    "encoder_name",
    "weights",
    "timings_ms",
    "error_code",
    "error",
    "previews",
    "top_results",
    "feedback",
]


def session_rows(sessions: QuerySet[SearchSession]) -> Iterator[dict[str, Any]]:
    first_turn = Prefetch("turns", queryset=Turn.objects.filter(index=0), to_attr="first_turns")
    # Start from the bare ids: the caller's queryset may carry its own annotations and prefetches.
    chosen = SearchSession.objects.filter(pk__in=sessions.order_by().values("pk"))
    queryset = (
        with_figures(chosen)
        .select_related("catalog__shop")
        .prefetch_related(first_turn)
        .order_by("created_at", "pk")
    )
    for session in queryset.iterator(chunk_size=_CHUNK):
        first_turns = session.first_turns
        first = first_turns[0].message if first_turns else ""
        yield {
            "id": str(session.pk),
            "created_at": session.created_at.isoformat(),
            "shop": session.catalog.shop.slug,
            "catalog": session.catalog.slug,
            # The shopper's Django session key is a credential: it is never exported.
            "user_id": session.user_id,
            "turns": session.n_turns,  # type: ignore[attr-defined]
            "failed_turns": session.n_failed,  # type: ignore[attr-defined]
            "likes": session.n_likes,  # type: ignore[attr-defined]
            "dislikes": session.n_dislikes,  # type: ignore[attr-defined]
            "liked": session.liked,  # type: ignore[attr-defined]
            "first_message": first,
        }


def turns_of(sessions: QuerySet[SearchSession]) -> QuerySet[Turn]:
    """The turns of ``sessions`` with everything a turn row shows, prefetched."""
    top = TurnResult.objects.filter(final=True).select_related("item").order_by("rank")
    return (
        Turn.objects.filter(session__in=sessions.order_by().values("pk"))
        .select_related("session__catalog")
        .prefetch_related(
            "previews",
            Prefetch("results", queryset=top, to_attr="final_results"),
            Prefetch("feedback_set", queryset=Feedback.objects.order_by("created_at")),
        )
    )


def turn_rows(sessions: QuerySet[SearchSession]) -> Iterator[dict[str, Any]]:
    queryset = turns_of(sessions).order_by("session__created_at", "session_id", "index")
    for turn in queryset.iterator(chunk_size=_CHUNK):
        yield {
            "session_id": str(turn.session_id),
            "catalog": turn.session.catalog.slug,
            "index": turn.index,
            "status": turn.status,
            "created_at": turn.created_at.isoformat(),
            "finished_at": turn.finished_at.isoformat() if turn.finished_at else None,
            "message": turn.message,
            "refined_query": turn.refined_query,
            "refinement_fallback": turn.refinement_fallback,
            "prompts": turn.prompts,
            "question": turn.question,
            "encoder_name": turn.encoder_name,
            "weights": turn.weights,
            "timings_ms": turn.timings,
            "error_code": turn.error_code,
            "error": turn.error,
            "previews": [{"prompt": p.prompt, "seed": p.seed} for p in turn.previews.all()],
            "top_results": [
                {"rank": r.rank, "item_id": r.item_id, "score": r.score, "title": str(r.item)}
                for r in turn.final_results[:TOP_RESULTS]  # type: ignore[attr-defined]
            ],
            "feedback": [{"item_id": f.item_id, "value": f.value} for f in turn.feedback_set.all()],
        }


def _csv_cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    # Shopper text opening with one of these is run as a formula by spreadsheet programs
    # (CSV injection); a leading quote makes them show it as text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class _Echo:
    """A file-like object whose write returns the line, so csv.writer feeds a generator."""

    def write(self, value: str) -> str:
        return value


def stream_csv(rows: Iterable[dict[str, Any]], fields: list[str]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(fields)
    for row in rows:
        yield writer.writerow([_csv_cell(row[name]) for name in fields])


def stream_json(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    yield "["
    for n, row in enumerate(rows):
        yield ("\n" if n == 0 else ",\n") + json.dumps(row, ensure_ascii=False)
    yield "\n]\n"


def export_response(
    sessions: QuerySet[SearchSession], kind: Kind, fmt: Format
) -> StreamingHttpResponse:
    """A streamed download of ``sessions`` (one row each) or of their turns."""
    if kind not in KINDS or fmt not in FORMATS:
        raise ValueError(f"unknown export {kind}.{fmt}")
    rows = session_rows(sessions) if kind == "sessions" else turn_rows(sessions)
    fields = SESSION_FIELDS if kind == "sessions" else TURN_FIELDS
    body = stream_csv(rows, fields) if fmt == "csv" else stream_json(rows)
    content_type = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    response = StreamingHttpResponse(body, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="dar-{kind}-{stamp}.{fmt}"'
    return response
