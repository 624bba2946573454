"""Every event a turn sends, and the JSON shapes shared by those events, the restore state and
the REST API.

One module builds them all, so a page that restores from the database sees exactly what it would
have seen from the live events, and a newcomer finds every event's shape in one file. They are
sent by ``retrieval.services.events.emit``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from catalog.models import CatalogItem
from retrieval.models import Feedback, Preview, SearchSession, Turn, TurnResult

from . import admission, filters


def image_url(field: Any) -> str:
    try:
        return str(field.url) if field else ""
    except ValueError:  # a file field with no file attached
        return ""


def open_url(item: CatalogItem) -> str:
    """Where a result's "Open" goes: the product page when the shop gave one, else the picture.
    The one place that decides it (search.js uses ``url`` as given)."""
    return item.product_url or image_url(item.image)


def item_payload(item: CatalogItem, *, score: float, rank: int) -> dict[str, Any]:
    return {
        "id": item.pk,
        "title": item.title or item.source_name or f"Item {item.pk}",
        "image": image_url(item.image),
        "url": open_url(item),
        # A string: a Decimal's digits as the shop wrote them (no float rounding), or null.
        "price": None if item.price is None else f"{item.price:.2f}",
        "currency": item.currency,
        "availability": item.availability,
        "brand": item.brand,
        "score": round(float(score), 6),
        "rank": rank,
    }


def accepted_events(turn: Turn, place: admission.Place | None) -> list[dict[str, Any]]:
    """What the page hears when a message is stored, before any of the turn's stages: the turn,
    its place in line when it waits behind other shoppers' turns, and which filter was let go
    when nothing matched them all."""
    shown = filters.payload(turn.filters)
    batch = [
        {
            "type": "turn.accepted",
            "turn": turn.index,
            "message": turn.message,
            "restates": turn.restates,
            "status": "queued",
            "filters": shown,
        }
    ]
    if place is not None:
        batch.append(queued_event(turn.index, place))
    if shown["notice"]:
        batch.append(
            {
                "type": "notice",
                "turn": turn.index,
                "code": "filters_relaxed",
                "message": shown["notice"],
            }
        )
    return batch


def queued_event(turn_index: int, place: admission.Place) -> dict[str, Any]:
    return {"type": "turn.queued", "turn": turn_index, **place.as_dict()}


def started_event(turn: Turn, attempt: int) -> dict[str, Any]:
    return {"type": "turn.started", "turn": turn.index, "attempt": attempt}


def done_events(turn: Turn, timings: dict[str, int], question: str | None) -> list[dict[str, Any]]:
    """The turn's last events: its question, if any, and ``turn.done``, in one message so that
    the turn's end reaches the page without a second round trip."""
    done = {"type": "turn.done", "turn": turn.index, "timings": dict(timings)}
    if question:
        return [{"type": "question", "turn": turn.index, "question": question}, done]
    return [done]


def error_event(turn_index: int | None, code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "turn": turn_index, "code": code, "message": message}


def feedback_event(item_id: int, value: int) -> dict[str, Any]:
    return {"type": "feedback", "turn": None, "item": item_id, "value": value}


def results_event(turn: Turn, results: Iterable[TurnResult], *, final: bool) -> dict[str, Any]:
    return {
        "type": "results",
        "turn": turn.index,
        "final": final,
        "items": [item_payload(r.item, score=r.score, rank=r.rank) for r in results],
    }


def refined_event(turn: Turn, *, note: str = "") -> dict[str, Any]:
    """``fallback``: the description is the grounded one built from the dialogue (the LLM's was
    unusable, invented content, dropped the latest message or ran long); ``note`` says why, or
    what was repaired."""
    return {
        "type": "query.refined",
        "turn": turn.index,
        "description": turn.refined_query,
        "prompts": list(turn.prompts),
        "fallback": turn.refinement_fallback,
        "note": note,
    }


def language_notice(turn: Turn, language: str) -> dict[str, Any]:
    return {
        "type": "notice",
        "turn": turn.index,
        "code": "language",
        "message": (
            f"This looks like {language}. This shop's search understands English only, so it "
            "searched for your exact words; describing it in English will find it better."
        ),
    }


def previews_event(turn: Turn, previews: Iterable[Preview]) -> dict[str, Any]:
    return {
        "type": "previews",
        "turn": turn.index,
        "images": [
            {"url": image_url(p.image), "prompt": p.prompt, "seed": p.seed} for p in previews
        ],
    }


def turn_payload(
    turn: Turn,
    results: list[TurnResult] | None = None,
    previews: list[Preview] | None = None,
) -> dict[str, Any]:
    """Everything a turn produced so far; final results win over provisional ones.

    ``results``/``previews`` may be passed in when loaded for many turns at once.
    """
    if results is None:
        results = list(turn.results.select_related("item").order_by("-final", "rank"))
    if previews is None:
        previews = list(turn.previews.order_by("index"))
    final = [r for r in results if r.final]
    shown = final or [r for r in results if not r.final]
    return {
        "index": turn.index,
        "message": turn.message,
        "restates": turn.restates,
        "context": list(turn.context),
        "status": turn.status,
        "refined_query": turn.refined_query,
        "prompts": list(turn.prompts),
        "fallback": turn.refinement_fallback,
        "previews": previews_event(turn, previews)["images"],
        "results": results_event(turn, shown, final=bool(final))["items"],
        "final": bool(final),
        "question": turn.question,
        "filters": filters.payload(turn.filters),
        "weights": dict(turn.weights),
        "timings": dict(turn.timings),
        "error": {"code": turn.error_code, "message": turn.error} if turn.error_code else None,
        "queue": place.as_dict() if (place := admission.place_of(turn)) else None,
        "created_at": turn.created_at.isoformat(),
        "finished_at": turn.finished_at.isoformat() if turn.finished_at else None,
    }


def session_payload(session: SearchSession) -> dict[str, Any]:
    feedback = Feedback.objects.filter(session=session).values_list("item_id", "value")
    turns = list(session.turns.order_by("index"))
    # Two queries for the whole history instead of two per turn, and none before the first
    # message: every page that opens a new search connects with no turn yet.
    results: dict[int, list[TurnResult]] = defaultdict(list)
    previews: dict[int, list[Preview]] = defaultdict(list)
    if turns:
        for result in (
            TurnResult.objects.filter(turn__session=session)
            .select_related("item")
            .order_by("turn_id", "-final", "rank")
        ):
            results[result.turn_id].append(result)
        for preview in Preview.objects.filter(turn__session=session).order_by("turn_id", "index"):
            previews[preview.turn_id].append(preview)
    return {
        "id": str(session.pk),
        "catalog": {"slug": session.catalog.slug, "name": session.catalog.name},
        "created_at": session.created_at.isoformat(),
        # Read afresh: a socket's session object is loaded once, when it connects.
        "filters": filters.state_payload(
            SearchSession.objects.filter(pk=session.pk).values_list("filters", flat=True).first()
            or {}
        ),
        "turns": [turn_payload(t, results[t.pk], previews[t.pk]) for t in turns],
        "feedback": {str(item_id): value for item_id, value in feedback},
    }


def state_event(session: SearchSession) -> dict[str, Any]:
    return {"type": "state", "turn": None, "session": session_payload(session)}
