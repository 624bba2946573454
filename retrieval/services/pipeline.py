"""One conversational search turn: the DAR pipeline stage by stage, in two tasks.

1. text (``run_text_stage``, the interactive worker): embed the dialogue text, rank, and publish
   provisional results at once;
2. refine (``run_turn``, the gpu worker, from here on): the LLM rewrites the whole dialogue into one
   description and k visual prompts;
3. generate: k previews painted from the prompts with a seed fixed per session and turn (their
   files are written beside the next stage, ``previews``);
4. rank: fuse text and preview similarities (paper weights, optional product text and feedback)
   into one pgvector query; store the previews and the final results and publish them together;
5. ask: optionally, the LLM proposes one clarifying question.

The text stage runs on a queue of its own so that first results never wait behind other
sessions' LLM work; the gpu task starts on the same turn at the same time and does not wait for
it. Whoever stores results first wins: provisional results are written only while the turn has
no results at all, under the turn's row lock, and announced before that lock is released, so they
always reach the page before the final ones. The gpu task stores its final results only once
provisional results exist, and ranks by text itself when the text stage failed or is late: a turn
is complete whatever happens to its text stage. A rerun after a lost gpu attempt redoes the text
stage itself, first, since the dead attempt's output is removed.

Each stage emits its events as soon as they are stored. Gpu attempts are fenced: every write checks
(in its own statement, or under a row lock) that the turn is still RUNNING under this attempt's
number, so a redelivered task or the sweeper can take a turn over and the stale attempt's writes
are dropped. Each stage writes in one statement or one transaction.

Models are imported inside the functions: this module is imported by the web process too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import DEFAULT_DB_ALIAS, connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from catalog.models import CatalogItem, ItemEmbedding
from catalog.services import vectors
from catalog.services.vectors import Hit
from retrieval.models import Preview, SearchSession, Turn, TurnResult
from workers.models.protocols import Dialogue, Refinement

from . import durability, events, payloads, previews, ranking
from .feedback import feedback_items
from .turns import ACTIVE, fail_turn, sweep_stuck_turns

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

T = TypeVar("T")
# Candidates whose titles the LLM sees when it thinks of a clarifying question.
QUESTION_CANDIDATES = 5
# What a result payload shows of an item (payloads.item_payload).
ITEM_FIELDS = ("id", "title", "source_name", "image")
# First key of the advisory lock that serialises the writes of a turn's results.
RESULTS_LOCK_SPACE = 0x7E57


class TurnNotReady(Exception):
    """The previous turn of the session has not finished; try again after ``delay`` seconds."""

    def __init__(self, turn_id: int, delay: float = 0.5) -> None:
        super().__init__(turn_id)
        self.delay = delay


# The text stage polls for its predecessor more often than the gpu task: it is one cheap query,
# and its whole point is to be quick once the turn may run.
TEXT_STAGE_POLL = 0.2


class Superseded(Exception):
    """Another attempt (or the sweeper) owns the turn now; this attempt must stop quietly."""


class TurnTimeout(Exception):
    pass


def dialogue_for(turn: Turn) -> Dialogue:
    """First message as the caption, later messages as rounds (the stored turn context)."""
    context = [str(m) for m in turn.context] or [turn.message]
    return Dialogue(caption=context[0], rounds=context[1:])


def turn_seed(session_id: object, index: int) -> int:
    """Deterministic generation seed per session and turn (a rerun paints the same previews)."""
    digest = hashlib.sha256(f"{session_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _predecessor_active() -> Exists:
    return Exists(
        Turn.objects.filter(
            session_id=OuterRef("session_id"), index=OuterRef("index") - 1, status__in=ACTIVE
        )
    )


def _has_results() -> Exists:
    return Exists(TurnResult.objects.filter(turn_id=OuterRef("pk")))


# --- the text stage (interactive worker) -------------------------------------------------------


def run_text_stage(turn_id: int) -> None:
    """Publish a turn's provisional (text-only) results; a no-op once the turn has results or is
    over (a redelivered task, or the gpu task was first).

    Raises ``TurnNotReady`` while the session's previous turn is unfinished (the task retries), so
    turns stay in order and each sees the feedback given before it. Never fails the turn: on any
    error the gpu task ranks by text itself before it stores its final results.
    """
    turn = (
        Turn.objects.select_related("session")
        .annotate(waiting=_predecessor_active(), has_results=_has_results())
        .filter(pk=turn_id)
        .first()
    )
    if turn is None or turn.status not in ACTIVE or turn.has_results:
        return
    if turn.waiting:
        raise TurnNotReady(turn.pk, delay=TEXT_STAGE_POLL)
    try:
        liked, disliked = feedback_items(turn.session_id)
        found = text_ranking(turn, turn.session.catalog_id, liked, disliked)
        with durability.derived_writes():
            store_provisional(turn, found)
    except Exception:
        log.exception("turn %s: text stage failed; the gpu task will rank by text", turn.pk)


@dataclass(frozen=True)
class TextRanking:
    encoder_name: str
    hits: list[Hit]
    items: dict[int, CatalogItem]
    ms: int


def text_ranking(turn: Turn, catalog_id: int, liked: list[int], disliked: list[int]) -> TextRanking:
    """The text stage's computation: the dialogue text (with feedback and product text) ranked."""
    from workers.models.registry import get_encoder

    start = time.monotonic()
    encoder = get_encoder()
    dialogue_text = dialogue_for(turn).as_text()
    query = _with_feedback(encoder.name, encoder.encode_texts([dialogue_text])[0], liked, disliked)
    hits = _rank(
        catalog_id,
        encoder.name,
        query,
        exclude=disliked if settings.DAR_FEEDBACK_EXCLUDE_DISLIKED else [],
        product_text=_product_text(dialogue_text, settings.DAR_WEIGHT_PRODUCT_TEXT),
    )
    ms = round((time.monotonic() - start) * 1000)
    return TextRanking(encoder.name, hits, _items(hits), ms)


def store_provisional(turn: Turn, found: TextRanking, *, attempt: int | None = None) -> bool:
    """Store and announce provisional results unless the turn has results already; returns
    whether it did. With ``attempt``, only while that gpu attempt owns the turn (``Superseded``
    otherwise); without, while the turn is queued or running.

    The event goes out under the turn's results lock, before the commit: final results, stored
    under the same lock once provisional ones exist, can never reach the page before them.
    """
    with transaction.atomic():
        _lock_results(turn.pk)
        rows = Turn.objects.filter(pk=turn.pk)
        if attempt is None:
            rows = rows.filter(status__in=ACTIVE)
        else:
            rows = rows.filter(status=Turn.Status.RUNNING, attempts=attempt)
        has_results = rows.annotate(has=_has_results()).values_list("has", flat=True).first()
        if has_results is None:
            if attempt is not None:
                raise Superseded(turn.pk)
            return False
        if has_results:
            return False
        results = _result_rows(turn, found.hits, found.items, final=False)
        TurnResult.objects.bulk_create(results)
        events.emit(turn.session_id, payloads.results_event(turn, results, final=False), wait=True)
        # Last, so that the turn's row is locked only for the commit (the gpu task's claim and
        # writes take it); the stage's time joins whatever timings the row has by then.
        text_ms = RawSQL("timings || %s::jsonb", [json.dumps({"text": found.ms})])
        rows.update(encoder_name=found.encoder_name, timings=text_ms)
    turn.encoder_name = found.encoder_name
    turn.timings = {**turn.timings, "text": found.ms}
    return True


def _lock_results(turn_id: int) -> None:
    """Serialise the writes of a turn's results (text stage, gpu fallback, final ranking) until
    the transaction ends, without locking the turn's row (which the gpu task's claim takes)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", [RESULTS_LOCK_SPACE, turn_id & 0x7FFFFFFF]
        )


# --- the gpu task ----------------------------------------------------------------------------


def run_turn(turn_id: int) -> None:
    """Run a turn's gpu stages; a no-op for a turn already finished (redelivered task).

    Raises ``TurnNotReady`` while the session's previous turn is unfinished (the task retries).
    Every failure ends the turn as FAILED with an ``error`` event; nothing is re-raised.
    """
    with durability.derived_writes():
        claimed = _claim(turn_id)
        if claimed is not None:
            _TurnRun(claimed).run()


def _claim(turn_id: int) -> Turn | None:
    """Start a new attempt: RUNNING, attempts + 1. One statement for a queued turn whose
    predecessor is over (the usual case); a rerun after a lost attempt also removes that attempt's
    partial output, or gives up after DAR_TURN_MAX_ATTEMPTS."""
    for _ in range(2):
        started = _start_queued(turn_id)
        if started is not None:
            return started
        turn = Turn.objects.filter(pk=turn_id).first()
        if turn is None or turn.status not in ACTIVE:
            return None
        if turn.status == Turn.Status.RUNNING:
            # With late acks a message comes back only when its worker died mid-turn.
            return _reclaim(turn_id)
        # Waiting for the previous turn: fail it if it is stuck, then try once more.
        if not sweep_stuck_turns(session_id=turn.session_id):
            raise TurnNotReady(turn_id)
    raise TurnNotReady(turn_id)


@functools.cache
def _claim_sql() -> str:
    turn, session = Turn._meta, SearchSession._meta
    columns = ", ".join(f't."{f.column}"' for f in turn.concrete_fields)
    return f"""
        UPDATE "{turn.db_table}" AS t
        SET "status" = %(running)s, "attempts" = t."attempts" + 1, "started_at" = %(now)s
        FROM "{session.db_table}" AS s
        WHERE t."id" = %(turn)s AND t."status" = %(queued)s AND s."id" = t."session_id"
          AND NOT EXISTS (
            SELECT 1 FROM "{turn.db_table}" AS p
            WHERE p."session_id" = t."session_id" AND p."index" = t."index" - 1
              AND p."status" IN (%(queued)s, %(running)s)
          )
        RETURNING {columns}, s."catalog_id" AS "session_catalog_id"
    """


def _start_queued(turn_id: int) -> Turn | None:
    """The usual claim in one round trip: a queued turn whose predecessor is over starts its first
    attempt; returned with its session's catalog (the only part of the session a run needs)."""
    params = {
        "turn": turn_id,
        "now": timezone.now(),
        "queued": Turn.Status.QUEUED,
        "running": Turn.Status.RUNNING,
    }
    started = list(Turn.objects.raw(_claim_sql(), params))
    turn = started[0] if started else None
    if turn is not None:
        catalog_id = turn.session_catalog_id  # type: ignore[attr-defined]
        turn.session = SearchSession.from_db(
            DEFAULT_DB_ALIAS, ["id", "catalog_id"], [turn.session_id, catalog_id]
        )
    return turn


def _reclaim(turn_id: int) -> Turn | None:
    """Take over a RUNNING turn whose last attempt was lost: remove its partial output and start
    the next attempt, or fail the turn (``worker_lost``) once it has had its attempts."""
    stale_files: list[str] = []
    with transaction.atomic():
        turn = Turn.objects.select_for_update().select_related("session").get(pk=turn_id)
        if turn.status != Turn.Status.RUNNING:
            return None
        log.warning("turn %s: restarting after lost attempt %s", turn.pk, turn.attempts)
        gave_up = turn.attempts >= settings.DAR_TURN_MAX_ATTEMPTS
        if not gave_up:
            stale_files = list(turn.previews.values_list("image", flat=True))
            turn.previews.all().delete()
            turn.results.all().delete()
            turn.attempts += 1
            turn.started_at = timezone.now()
            turn.refined_query, turn.prompts, turn.refinement_fallback = "", [], False
            turn.question, turn.timings, turn.weights = "", {}, {}
            turn.encoder_name, turn.error_code, turn.error = "", "", ""
            turn.save()
    # Files go only once the rows are gone for good (after the commit).
    for name in stale_files:
        default_storage.delete(name)
    if gave_up:
        fail_turn(
            turn,
            "worker_lost",
            "The search worker stopped several times on this message; please rephrase it.",
        )
        return None
    return turn


@dataclass
class _TurnRun:
    turn: Turn
    timings: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def attempt(self) -> int:
        return self.turn.attempts

    def run(self) -> None:
        turn = self.turn
        self._emit({"type": "turn.started", "turn": turn.index, "attempt": self.attempt})
        try:
            self._pipeline()
        except Superseded:
            log.info("turn %s: attempt %s superseded, stopping", turn.pk, self.attempt)
        except (SoftTimeLimitExceeded, TurnTimeout):
            self._fail("timeout", "This search step took too long and was stopped.")
        except Exception:
            log.exception("turn %s failed", turn.pk)
            self._fail("internal", "Something went wrong while searching. Please try again.")

    # --- stages ------------------------------------------------------------------------------

    def _pipeline(self) -> None:
        from workers.models.registry import get_refiner

        turn = self.turn
        dialogue = dialogue_for(turn)
        k = settings.DAR_PREVIEWS_PER_TURN
        liked, disliked = feedback_items(turn.session_id)
        if self.attempt > 1:
            # A rerun: the text stage's results went with the lost attempt; the page gets them
            # again first.
            self._text_stage(liked, disliked)

        refiner = self._stage("refine", get_refiner)
        refinement = self._stage("refine", lambda: self._refine(refiner, dialogue, k))
        self._save_refinement(refinement, k)

        images, seed = self._stage("generate", lambda: self._generate(k))
        files = previews.write(self.turn, self.attempt, self.turn.prompts, images, seed)
        try:
            hits, items = self._stage("rank", lambda: self._final_ranking(images, liked, disliked))
            # Waiting for the files, if the ranking was quicker, is part of painting previews.
            stored = self._stage("generate", files.result)
            if not self._save_final(hits, items, stored):
                # The text stage failed or is late: rank by text here (provisional results go
                # out first), then store the final ones.
                self._text_stage(liked, disliked)
                if not self._save_final(hits, items, stored):
                    raise RuntimeError(f"turn {turn.pk}: provisional results vanished")
        except BaseException:
            previews.discard(files)
            raise

        # The final results are out: from here on the turn succeeds. A question is optional, so
        # running out of time while asking only drops the question.
        question = None
        if settings.DAR_ASK_QUESTIONS and not self._past_deadline():
            question = self._stage(
                "ask", lambda: self._ask(refiner, dialogue, hits, items), enforce_deadline=False
            )
        self._finish(question)

    def _text_stage(self, liked: list[int], disliked: list[int]) -> None:
        found = self._stage(
            "text", lambda: text_ranking(self.turn, self._catalog_id, liked, disliked)
        )
        if not store_provisional(self.turn, found, attempt=self.attempt):
            # The interactive worker's results came first: its time is the stage's.
            self.timings.pop("text", None)

    @property
    def _catalog_id(self) -> int:
        return int(self.turn.session.catalog_id)

    def _refine(self, refiner: Any, dialogue: Dialogue, k: int) -> Refinement:
        try:
            refinement: Refinement = refiner.refine(dialogue, max(k, 1))
        except (SoftTimeLimitExceeded, Superseded):
            raise
        except Exception:
            # The refiner is supposed to fall back by itself; if it raises anyway, searching with
            # the shopper's own words beats failing the turn.
            log.exception("turn %s: refiner raised, using the dialogue text", self.turn.pk)
            text = dialogue.as_text()
            refinement = Refinement(description=text, prompts=[text] * max(k, 1), fallback=True)
        description = refinement.description.strip() or dialogue.as_text()
        prompts = [p for p in refinement.prompts if p.strip()] or [description]
        # The LLM may return fewer prompts than asked: cycle through the ones it gave.
        prompts = [prompts[i % len(prompts)] for i in range(k)]
        return Refinement(description=description, prompts=prompts, fallback=refinement.fallback)

    def _generate(self, k: int) -> tuple[list[Image.Image], int]:
        """The previews' images and the seed of the first."""
        seed = turn_seed(self.turn.session_id, self.turn.index)
        if k == 0 or not self.turn.prompts:
            return [], seed
        from workers.models.registry import get_generator

        return get_generator().generate(list(self.turn.prompts), seed), seed

    def _final_ranking(
        self, images: list[Image.Image], liked: list[int], disliked: list[int]
    ) -> tuple[list[Hit], dict[int, CatalogItem]]:
        from workers.models.registry import get_encoder

        encoder = get_encoder()
        weights = ranking.paper_weights(self.turn.index)
        description = self.turn.refined_query or dialogue_for(self.turn).as_text()
        text_vec = encoder.encode_texts([description])[0]
        gen_vecs = encoder.encode_images(images) if images else None
        query = ranking.fuse(text_vec, gen_vecs, weights)
        query = _with_feedback(encoder.name, query, liked, disliked)
        self.turn.weights = weights.as_dict()
        self.turn.encoder_name = encoder.name
        hits = _rank(
            self._catalog_id,
            encoder.name,
            query,
            exclude=disliked if settings.DAR_FEEDBACK_EXCLUDE_DISLIKED else [],
            product_text=_product_text(description, weights.product_text),
        )
        return hits, _items(hits)

    def _ask(
        self, refiner: Any, dialogue: Dialogue, hits: list[Hit], items: dict[int, CatalogItem]
    ) -> str | None:
        titles = [str(items[h.item_id]) for h in hits[:QUESTION_CANDIDATES] if h.item_id in items]
        try:
            question = refiner.ask(dialogue, titles)
        except SoftTimeLimitExceeded:
            log.warning("turn %s: out of time while asking, no question", self.turn.pk)
            return None
        except Exception:
            # A question is a nicety: its failure must not cost the shopper the results.
            log.exception("turn %s: asking a question failed", self.turn.pk)
            return None
        return question.strip() if isinstance(question, str) and question.strip() else None

    # --- writes, each fenced by the attempt number ---------------------------------------------

    def _owned(self) -> QuerySet[Turn]:
        """This attempt's turn row: empty once another attempt or the sweeper took the turn."""
        return Turn.objects.filter(
            pk=self.turn.pk, status=Turn.Status.RUNNING, attempts=self.attempt
        )

    def _update(self, **values: Any) -> None:
        """One fenced statement."""
        if not self._owned().update(**values):
            raise Superseded(self.turn.pk)
        for name, value in values.items():
            setattr(self.turn, name, value)

    def _locked(self, *fields: str) -> dict[str, Any]:
        """Lock this attempt's row (inside a transaction) and read ``fields`` and whether the
        turn has provisional results."""
        provisional = Exists(TurnResult.objects.filter(turn_id=OuterRef("pk"), final=False))
        row = (
            self._owned()
            .select_for_update()
            .annotate(has_provisional=provisional)
            .values("has_provisional", *fields)
            .first()
        )
        if row is None:
            raise Superseded(self.turn.pk)
        return row

    def _save_refinement(self, refinement: Refinement, k: int) -> None:
        self._update(
            refined_query=refinement.description,
            prompts=refinement.prompts[:k],
            refinement_fallback=refinement.fallback,
        )
        self._emit(payloads.refined_event(self.turn))

    def _save_final(
        self, hits: list[Hit], items: dict[int, CatalogItem], stored: list[Preview]
    ) -> bool:
        """Store the previews' rows and the final results in one transaction and announce them
        together; returns False (storing nothing) while the turn has no provisional results."""
        results = _result_rows(self.turn, hits, items, final=True)
        with transaction.atomic():
            _lock_results(self.turn.pk)  # after any provisional results' event (see above)
            row = self._locked("timings")
            if not row["has_provisional"]:
                return False
            Preview.objects.bulk_create(stored)
            TurnResult.objects.bulk_create(results)
        # The text stage's timing, stored by whoever ran it, joins this attempt's.
        self.timings = {**row["timings"], **self.timings}
        self._emit(
            payloads.previews_event(self.turn, stored),
            payloads.results_event(self.turn, results, final=True),
        )
        return True

    def _finish(self, question: str | None) -> None:
        self.timings["total"] = self._elapsed_ms()
        if self.turn.started_at:
            queued = self.turn.started_at - self.turn.created_at
            self.timings["queued"] = max(0, round(queued.total_seconds() * 1000))
        self._update(
            status=Turn.Status.DONE,
            timings=dict(self.timings),
            question=question or "",
            # Stored with the outcome: only a finished turn's weights are of interest.
            weights=self.turn.weights,
            encoder_name=self.turn.encoder_name,
            finished_at=timezone.now(),
        )
        done = {"type": "turn.done", "turn": self.turn.index, "timings": dict(self.timings)}
        if question:
            # One message: the turn's last event reaches the page without a second round trip.
            self._emit({"type": "question", "turn": self.turn.index, "question": question}, done)
        else:
            self._emit(done)

    def _fail(self, code: str, message: str) -> None:
        self.timings["total"] = self._elapsed_ms()
        self.turn.timings = {**self.turn.timings, **self.timings}
        fail_turn(self.turn, code, message, attempt=self.attempt, statuses=[Turn.Status.RUNNING])

    # --- helpers ---------------------------------------------------------------------------

    def _stage(self, name: str, work: Callable[[], T], *, enforce_deadline: bool = True) -> T:
        """Run part of a stage, adding its wall time to the stage; stop past the turn's limit."""
        # Celery's soft limit interrupts a stage from outside (prefork pool); this check also
        # covers pools without time limits (threads) and stops before the next stage starts.
        start = time.monotonic()
        result = work()
        self.timings[name] = self.timings.get(name, 0) + round((time.monotonic() - start) * 1000)
        if enforce_deadline and self._past_deadline():
            raise TurnTimeout(self.turn.pk)
        return result

    def _past_deadline(self) -> bool:
        return time.monotonic() - self.started > settings.DAR_TURN_TIME_LIMIT

    def _elapsed_ms(self) -> int:
        return round((time.monotonic() - self.started) * 1000)

    def _emit(self, *batch: dict[str, Any]) -> None:
        # The stages do not wait for Redis: this process sends its events in order, and the only
        # event another process's must follow (the text-only results) is sent waiting.
        events.emit(self.turn.session_id, *batch, wait=False)


# --- shared helpers --------------------------------------------------------------------------


def _rank(
    catalog_id: int,
    model_name: str,
    query: np.ndarray,
    *,
    exclude: list[int],
    product_text: tuple[str, np.ndarray, float] | None = None,
) -> list[Hit]:
    return ranking.rank(
        catalog_id=catalog_id,
        model_name=model_name,
        query=query,
        k=settings.DAR_RESULTS_K,
        product_text=product_text,
        exclude=exclude,
    )


def _with_feedback(
    model_name: str, query: np.ndarray, liked: list[int], disliked: list[int]
) -> np.ndarray:
    if not liked and not disliked:
        return query
    found = vectors.vectors_for(
        space=ItemEmbedding.Space.IMAGE, model_name=model_name, item_ids=liked + disliked
    )
    return ranking.rocchio(
        query,
        [found[i] for i in liked if i in found],
        [found[i] for i in disliked if i in found],
    )


def _product_text(text: str, weight: float) -> tuple[str, np.ndarray, float] | None:
    """The optional product-text term of ``ranking.rank`` (title/description similarity)."""
    if weight <= 0:
        return None
    from workers.models.registry import get_text_embedder

    embedder = get_text_embedder()
    return (embedder.name, embedder.encode([text])[0], weight)


def _items(hits: Sequence[Hit]) -> dict[int, CatalogItem]:
    """What the result payloads show of the ranked items, in one query."""
    ids = [h.item_id for h in hits]
    return CatalogItem.objects.only(*ITEM_FIELDS).in_bulk(ids) if ids else {}


def _result_rows(
    turn: Turn, hits: Sequence[Hit], items: dict[int, CatalogItem], *, final: bool
) -> list[TurnResult]:
    """Result rows ready to insert, with their items attached for the event payload. An item
    deleted since it was ranked is left out (the ranks stay gapless)."""
    kept = [h for h in hits if h.item_id in items]
    return [
        TurnResult(turn=turn, item=items[h.item_id], final=final, rank=r, score=h.score)
        for r, h in enumerate(kept, start=1)
    ]
