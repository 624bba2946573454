"""The shopping-dialogue benchmark (``manage.py evaluate_dialogues``): whole turns, live catalog.

Each dialogue is a list of shopper messages and a target item (its title, file name or id). Every
message goes through the turn services the websocket uses (``submit.submit_message``, the text
stage, the gpu task: refine, generate, fuse with product text and feedback, ask), in a fresh
search session per dialogue; the two tasks run in this process, one after the other, instead of
on the workers. After each message the target's rank is read from the stored results, text-first
(provisional) and final, so what is measured is what the page shows.

Per turn index and after each dialogue's last message: Hits@1, Hits@10 and MRR (over the
``DAR_RESULTS_K`` results a turn keeps: a target outside them counts 0), the refinement fallback
rate, the refined descriptions and the mean time of each stage. ``--compare`` runs refiner
variants over the same dialogues: ``none`` (no LLM: the grounded description built from the
dialogue), ``configured`` (the profile's LLM; ``offline`` and ``standard`` are the same thing
under those profiles) and ``openai`` (an OpenAI-compatible server from ``DAR_OPENAI_*``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db.models import Q

from catalog.models import Catalog, CatalogItem
from retrieval.models import SearchSession, Turn, TurnResult
from retrieval.services import sessions
from retrieval.turn import pipeline, submit, text_stage

VARIANTS = ("none", "configured", "offline", "standard", "openai")


class DialogueFileError(ValueError):
    """The dialogue file cannot be used (says why)."""


@dataclass(frozen=True)
class Case:
    target: str
    messages: list[str]


@dataclass
class TurnOutcome:
    index: int
    message: str
    status: str
    text_rank: int | None  # 1-based rank in the text-first results, None when not among them
    final_rank: int | None
    refined: str
    fallback: bool
    question: str
    timings: dict[str, int]


@dataclass
class DialogueOutcome:
    target: str
    target_id: int
    turns: list[TurnOutcome] = field(default_factory=list)


def load_cases(path: Path) -> list[Case]:
    """Dialogues from JSON: a list of ``{"target": str, "turns": [str, ...]}``."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DialogueFileError(f"{path}: cannot read the dialogues: {err}") from err
    if not isinstance(raw, list) or not raw:
        raise DialogueFileError(f"{path}: expected a non-empty JSON list of dialogues")
    cases = []
    for n, entry in enumerate(raw):
        target = entry.get("target") if isinstance(entry, dict) else None
        messages = entry.get("turns") if isinstance(entry, dict) else None
        if not isinstance(target, str | int) or not str(target).strip():
            raise DialogueFileError(f"{path}: dialogue {n} has no target")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, str) and m.strip() for m in messages)
        ):
            raise DialogueFileError(f"{path}: dialogue {n} needs a non-empty list of messages")
        cases.append(Case(str(target).strip(), [m.strip() for m in messages]))
    return cases


def resolve_targets(catalog: Catalog, cases: Sequence[Case]) -> dict[str, int]:
    """Item id of each target: by title, else by file name, else by id; raises naming the
    targets the catalog lacks."""
    found: dict[str, int] = {}
    missing = []
    for case in cases:
        if case.target in found:
            continue
        items = CatalogItem.objects.filter(catalog=catalog)
        match = items.filter(title__iexact=case.target).order_by("pk").first()
        match = match or items.filter(source_name__iexact=case.target).order_by("pk").first()
        if match is None and case.target.isdigit():
            match = items.filter(Q(pk=int(case.target))).first()
        if match is None:
            missing.append(case.target)
        else:
            found[case.target] = match.pk
    if missing:
        raise DialogueFileError(
            f"catalog {catalog.slug!r} has no item titled {', '.join(map(repr, missing))}"
        )
    return found


def _run_in_process(turn: Turn) -> None:
    """What the two workers do for a turn, here and in order: the text stage, then the gpu
    task (which would rank by text itself if the text stage had failed)."""
    text_stage.run_text_stage(turn.pk)
    pipeline.run_turn(turn.pk)


def _rank_of(turn: Turn, target_id: int, *, final: bool) -> int | None:
    rank = (
        TurnResult.objects.filter(turn=turn, final=final, item_id=target_id)
        .values_list("rank", flat=True)
        .first()
    )
    return int(rank) if rank is not None else None


def run_dialogue(catalog: Catalog, case: Case, target_id: int) -> DialogueOutcome:
    """One dialogue in a fresh anonymous session, message by message."""
    session = sessions.create_session(catalog, None, f"evaluate-{uuid.uuid4().hex}")
    outcome = DialogueOutcome(case.target, target_id)
    for text in case.messages:
        turn = submit.submit_message(session, text, enqueue=_run_in_process)
        turn.refresh_from_db()
        outcome.turns.append(
            TurnOutcome(
                index=turn.index,
                message=text,
                status=turn.status,
                text_rank=_rank_of(turn, target_id, final=False),
                final_rank=_rank_of(turn, target_id, final=True),
                refined=turn.refined_query,
                fallback=bool(turn.refinement_fallback),
                question=turn.question,
                timings={k: int(v) for k, v in (turn.timings or {}).items()},
            )
        )
    SearchSession.objects.filter(pk=session.pk).delete()
    return outcome


# --- metrics -----------------------------------------------------------------------------------


def metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    """Hits@1, Hits@10 and MRR of 1-based ranks (None: not among the results, counts 0)."""
    n = len(ranks)
    if not n:
        return {"n": 0, "hits@1": 0.0, "hits@10": 0.0, "mrr": 0.0}
    return {
        "n": n,
        "hits@1": round(sum(1 for r in ranks if r is not None and r <= 1) / n, 4),
        "hits@10": round(sum(1 for r in ranks if r is not None and r <= 10) / n, 4),
        "mrr": round(sum(1.0 / r for r in ranks if r is not None) / n, 4),
    }


def summarise(outcomes: Sequence[DialogueOutcome]) -> dict[str, Any]:
    """Figures per turn index, after each dialogue's last message, and over all turns."""
    every = [t for o in outcomes for t in o.turns]
    per_index: dict[str, Any] = {}
    for index in sorted({t.index for t in every}):
        at = [t for t in every if t.index == index]
        per_index[str(index)] = _figures(at)
    last = [o.turns[-1] for o in outcomes if o.turns]
    return {"last": _figures(last), "per_turn": per_index, "all_turns": _figures(every)}


def _figures(outcomes: Sequence[TurnOutcome]) -> dict[str, Any]:
    stages: dict[str, list[int]] = {}
    for t in outcomes:
        for name, ms in t.timings.items():
            stages.setdefault(name, []).append(ms)
    return {
        "text_first": metrics([t.text_rank for t in outcomes]),
        "final": metrics([t.final_rank for t in outcomes]),
        "fallback_rate": round(sum(t.fallback for t in outcomes) / max(len(outcomes), 1), 4),
        "failed": sum(t.status != Turn.Status.DONE for t in outcomes),
        "mean_ms": {k: round(sum(v) / len(v)) for k, v in sorted(stages.items())},
    }


# --- variants ----------------------------------------------------------------------------------


@contextmanager
def variant(name: str) -> Iterator[None]:
    """Serve the variant's refiner to the turn code inside the block."""
    from workers.models import registry

    if name in ("configured", "offline", "standard"):
        with nullcontext():
            yield
        return
    if name == "none":
        from workers.models.grounding import GroundedRefiner

        refiner: Any = GroundedRefiner()
    elif name == "openai":
        from workers.models.config import model_settings
        from workers.models.refiner import OpenAIChatRefiner

        settings = model_settings()
        if not settings.openai_base_url:
            raise DialogueFileError("--compare openai needs DAR_OPENAI_BASE_URL (and _MODEL)")
        refiner = OpenAIChatRefiner(
            settings.openai_base_url,
            settings.openai_model,
            api_key=settings.openai_api_key,
            timeout=settings.openai_timeout,
        )
    else:
        raise DialogueFileError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    with registry.using("refiner", refiner):
        yield


def evaluate(
    catalog: Catalog,
    cases: Sequence[Case],
    variants: Sequence[str],
    *,
    progress: Callable[[str, int, DialogueOutcome], None] | None = None,
    partial: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every dialogue under every variant; the JSON report. ``partial`` gets the report so
    far after each dialogue (a long run that is stopped keeps what it measured)."""
    targets = resolve_targets(catalog, cases)
    report: dict[str, Any] = {"catalog": catalog.slug, "dialogues": len(cases), "variants": {}}
    for name in variants:
        start = time.monotonic()
        outcomes: list[DialogueOutcome] = []
        with variant(name):
            for n, case in enumerate(cases):
                outcome = run_dialogue(catalog, case, targets[case.target])
                outcomes.append(outcome)
                if progress is not None:
                    progress(name, n, outcome)
                report["variants"][name] = _variant_report(outcomes, time.monotonic() - start)
                if partial is not None:
                    partial(report)
        report["variants"][name] = _variant_report(outcomes, time.monotonic() - start)
    return report


def _variant_report(outcomes: Sequence[DialogueOutcome], seconds: float) -> dict[str, Any]:
    return {
        "summary": summarise(outcomes),
        "seconds": round(seconds, 1),
        "dialogues": [
            {"target": o.target, "target_id": o.target_id, "turns": [t.__dict__ for t in o.turns]}
            for o in outcomes
        ],
    }


def format_table(report: dict[str, Any]) -> str:
    """The figures as a plain-text table: one row per variant and turn index, then 'last'."""
    lines = [
        f"{'variant':<11} {'turn':>4} {'n':>3}  {'text H@1':>8} {'H@10':>5} {'MRR':>5}"
        f"  {'final H@1':>9} {'H@10':>5} {'MRR':>5}  {'fallback':>8}",
    ]
    for name, body in report["variants"].items():
        summary = body["summary"]
        rows = [*summary["per_turn"].items(), ("last", summary["last"])]
        for index, figs in rows:
            t, f = figs["text_first"], figs["final"]
            lines.append(
                f"{name:<11} {index:>4} {t['n']:>3}  {t['hits@1']:>8.2f} {t['hits@10']:>5.2f} "
                f"{t['mrr']:>5.3f}  {f['hits@1']:>9.2f} {f['hits@10']:>5.2f} {f['mrr']:>5.3f}"
                f"  {figs['fallback_rate']:>8.2f}"
            )
        stages = ", ".join(f"{k} {v} ms" for k, v in summary["all_turns"]["mean_ms"].items())
        lines.append(f"{name:<11} mean time per turn: {stages}")
    return "\n".join(lines)
