"""One conversational search turn, run on the gpu worker: the DAR pipeline stage by stage.

1. text: embed the dialogue text and publish provisional results at once;
2. refine: the LLM rewrites the whole dialogue into one description and k visual prompts;
3. generate: k previews painted from the prompts with a seed fixed per session and turn;
4. rank: fuse text and preview similarities (paper weights, optional product text and feedback)
   into one pgvector query and publish the final results;
5. ask: optionally, the LLM proposes one clarifying question.

Each stage emits its event as soon as it is stored. Attempts are fenced: every write checks,
under a row lock, that the turn is still RUNNING under this attempt's number, so a redelivered
task or the sweeper can take a turn over and the stale attempt's writes are dropped.

Models are imported inside the functions: this module is imported by the web process too.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from catalog.models import CatalogItem, ItemEmbedding
from catalog.services import vectors
from catalog.services.vectors import Hit
from retrieval.models import Preview, Turn, TurnResult
from workers.models.protocols import Dialogue, Refinement

from . import events, payloads, ranking
from .feedback import feedback_items
from .turns import ACTIVE, fail_turn, sweep_stuck_turns

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

T = TypeVar("T")
# Candidates whose titles the LLM sees when it thinks of a clarifying question.
QUESTION_CANDIDATES = 5


class TurnNotReady(Exception):
    """The previous turn of the session has not finished; try again after ``delay`` seconds."""

    delay = 0.5


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


def run_turn(turn_id: int) -> None:
    """Run a turn's pipeline; a no-op for a turn already finished (redelivered task).

    Raises ``TurnNotReady`` while the session's previous turn is unfinished (the task retries).
    Every failure ends the turn as FAILED with an ``error`` event; nothing is re-raised.
    """
    turn = Turn.objects.select_related("session").filter(pk=turn_id).first()
    if turn is None or turn.status not in ACTIVE:
        return
    sweep_stuck_turns(session_id=turn.session_id)
    if turn.index > 0:
        previous = Turn.objects.filter(session_id=turn.session_id, index=turn.index - 1).first()
        if previous is not None and previous.status in ACTIVE:
            raise TurnNotReady(turn.pk)
    claimed = _claim(turn.pk)
    if claimed is None:
        return
    _TurnRun(claimed).run()


def _claim(turn_id: int) -> Turn | None:
    """Start a new attempt: RUNNING, attempts + 1, partial output of a dead attempt removed."""
    stale_files: list[str] = []
    gave_up = False
    with transaction.atomic():
        turn = Turn.objects.select_for_update().select_related("session").get(pk=turn_id)
        if turn.status not in ACTIVE:
            return None
        if turn.status == Turn.Status.RUNNING:
            # With late acks a message comes back only when its worker died mid-turn.
            log.warning("turn %s: restarting after lost attempt %s", turn.pk, turn.attempts)
            gave_up = turn.attempts >= settings.DAR_TURN_MAX_ATTEMPTS
            if not gave_up:
                stale_files = list(turn.previews.values_list("image", flat=True))
                turn.previews.all().delete()
                turn.results.all().delete()
        if not gave_up:
            turn.status = Turn.Status.RUNNING
            turn.attempts += 1
            turn.started_at = timezone.now()
            turn.refined_query, turn.prompts, turn.refinement_fallback = "", [], False
            turn.question, turn.timings, turn.weights = "", {}, {}
            turn.error_code, turn.error = "", ""
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
        from workers.models.registry import get_encoder, get_refiner

        turn = self.turn
        dialogue = dialogue_for(turn)
        dialogue_text = dialogue.as_text()
        k = settings.DAR_PREVIEWS_PER_TURN
        liked, disliked = feedback_items(turn.session_id)
        exclude = disliked if settings.DAR_FEEDBACK_EXCLUDE_DISLIKED else []

        encoder = self._stage("text", get_encoder)
        text_vec = self._stage("text", lambda: encoder.encode_texts([dialogue_text])[0])
        query = self._with_feedback(encoder.name, text_vec, liked, disliked)
        hits = self._stage(
            "text",
            lambda: self._rank(
                encoder.name,
                query,
                exclude=exclude,
                product_text=self._product_text(dialogue_text, settings.DAR_WEIGHT_PRODUCT_TEXT),
            ),
        )
        self._save_results(hits, final=False, encoder_name=encoder.name)

        refiner = self._stage("refine", get_refiner)
        refinement = self._stage("refine", lambda: self._refine(refiner, dialogue, k))
        self._save_refinement(refinement, k)

        images = self._stage("generate", lambda: self._generate(k))

        hits = self._stage(
            "rank",
            lambda: self._final_ranking(encoder, dialogue_text, images, liked, disliked, exclude),
        )
        self._save_results(hits, final=True)

        # The final results are out: from here on the turn succeeds. A question is optional, so
        # running out of time while asking only drops the question.
        if settings.DAR_ASK_QUESTIONS and not self._past_deadline():
            question = self._stage(
                "ask", lambda: self._ask(refiner, dialogue, hits), enforce_deadline=False
            )
            if question:
                self._save_question(question)
        self._finish()

    def _rank(
        self,
        model_name: str,
        query: np.ndarray,
        *,
        exclude: list[int],
        product_text: tuple[str, np.ndarray, float] | None = None,
    ) -> list[Hit]:
        return ranking.rank(
            catalog_id=self.turn.session.catalog_id,
            model_name=model_name,
            query=query,
            k=settings.DAR_RESULTS_K,
            product_text=product_text,
            exclude=exclude,
        )

    def _with_feedback(
        self, model_name: str, query: np.ndarray, liked: list[int], disliked: list[int]
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

    def _generate(self, k: int) -> list[Image.Image]:
        if k == 0 or not self.turn.prompts:
            self._save_previews([], 0)
            return []
        from workers.models.registry import get_generator

        seed = turn_seed(self.turn.session_id, self.turn.index)
        images = get_generator().generate(list(self.turn.prompts), seed)
        self._save_previews(images, seed)
        return images

    def _final_ranking(
        self,
        encoder: Any,
        dialogue_text: str,
        images: list[Image.Image],
        liked: list[int],
        disliked: list[int],
        exclude: list[int],
    ) -> list[Hit]:
        weights = ranking.paper_weights(self.turn.index)
        description = self.turn.refined_query or dialogue_text
        text_vec = encoder.encode_texts([description])[0]
        gen_vecs = encoder.encode_images(images) if images else None
        query = ranking.fuse(text_vec, gen_vecs, weights)
        query = self._with_feedback(encoder.name, query, liked, disliked)
        product_text = self._product_text(description, weights.product_text)
        self._save_fields(weights=weights.as_dict())
        return self._rank(encoder.name, query, exclude=exclude, product_text=product_text)

    def _product_text(self, text: str, weight: float) -> tuple[str, np.ndarray, float] | None:
        """The optional product-text term of ``ranking.rank`` (title/description similarity)."""
        if weight <= 0:
            return None
        from workers.models.registry import get_text_embedder

        embedder = get_text_embedder()
        return (embedder.name, embedder.encode([text])[0], weight)

    def _ask(self, refiner: Any, dialogue: Dialogue, hits: list[Hit]) -> str | None:
        ids = [h.item_id for h in hits[:QUESTION_CANDIDATES]]
        items = CatalogItem.objects.in_bulk(ids)
        titles = [str(items[i]) for i in ids if i in items]
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

    @contextmanager
    def _owned(self) -> Iterator[Turn]:
        with transaction.atomic():
            current = (
                Turn.objects.select_for_update()
                .filter(pk=self.turn.pk, status=Turn.Status.RUNNING, attempts=self.attempt)
                .first()
            )
            if current is None:
                raise Superseded(self.turn.pk)
            yield current

    def _save_fields(self, **values: Any) -> None:
        with self._owned():
            Turn.objects.filter(pk=self.turn.pk).update(**values)
        for name, value in values.items():
            setattr(self.turn, name, value)

    def _save_results(
        self, hits: list[Hit], *, final: bool, encoder_name: str | None = None
    ) -> None:
        with self._owned():
            if encoder_name is not None:
                Turn.objects.filter(pk=self.turn.pk).update(encoder_name=encoder_name)
                self.turn.encoder_name = encoder_name
            TurnResult.objects.filter(turn=self.turn, final=final).delete()
            TurnResult.objects.bulk_create(
                TurnResult(turn=self.turn, item_id=h.item_id, final=final, rank=r, score=h.score)
                for r, h in enumerate(hits, start=1)
            )
        saved = self.turn.results.filter(final=final).select_related("item").order_by("rank")
        self._emit(payloads.results_event(self.turn, saved, final=final))

    def _save_refinement(self, refinement: Refinement, k: int) -> None:
        self._save_fields(
            refined_query=refinement.description,
            prompts=refinement.prompts[:k],
            refinement_fallback=refinement.fallback,
        )
        self._emit(payloads.refined_event(self.turn))

    def _save_previews(self, images: list[Image.Image], seed: int) -> None:
        with self._owned():
            for j, image in enumerate(images):
                buffer = io.BytesIO()
                # Lossless: the stored preview is exactly the image the ranking encoded, so the
                # fused query can be recomputed from the database (analysts, tests).
                image.convert("RGB").save(buffer, format="PNG")
                preview = Preview(
                    turn=self.turn, index=j, prompt=self.turn.prompts[j], seed=seed + j
                )
                # The attempt number keeps a rerun from colliding with a dead attempt's file.
                name = f"{self.turn.session_id}-t{self.turn.index}-a{self.attempt}-{j}.png"
                preview.image.save(name, ContentFile(buffer.getvalue()), save=True)
        self._emit(payloads.previews_event(self.turn, self.turn.previews.order_by("index")))

    def _save_question(self, question: str) -> None:
        self._save_fields(question=question)
        self._emit({"type": "question", "turn": self.turn.index, "question": question})

    def _finish(self) -> None:
        self.timings["total"] = self._elapsed_ms()
        if self.turn.started_at:
            queued = self.turn.started_at - self.turn.created_at
            self.timings["queued"] = max(0, round(queued.total_seconds() * 1000))
        self._save_fields(
            status=Turn.Status.DONE, timings=dict(self.timings), finished_at=timezone.now()
        )
        self._emit({"type": "turn.done", "turn": self.turn.index, "timings": dict(self.timings)})

    def _fail(self, code: str, message: str) -> None:
        self.timings["total"] = self._elapsed_ms()
        self.turn.timings = dict(self.timings)
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

    def _emit(self, event: dict[str, Any]) -> None:
        events.emit(self.turn.session_id, event)
