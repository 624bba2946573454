"""One conversational search turn: the DAR pipeline stage by stage, in two tasks.

1. text (``text_stage.run_text_stage``, the interactive worker): embed the dialogue text, rank,
   and publish provisional results at once;
2. refine (``run_turn``, the gpu worker, from here on; ``store.claim`` starts it): the LLM
   rewrites the whole dialogue into one description and k visual prompts, announced at once;
3. generate: k previews painted from the prompts with a seed fixed per session and turn (their
   files are written beside the next stage, ``previews``);
4. rank: fuse text and preview similarities (paper weights, optional product text and feedback)
   into one pgvector query (``ranking``); store the refinement, the previews and the final
   results in one statement (``store.store_final``) and publish them together;
5. ask: optionally, the LLM proposes one clarifying question; it starts as soon as the ranking is
   known, beside the storing of the results (``asking``).

The text stage runs on a queue of its own so that first results never wait behind other
sessions' LLM work; the gpu task starts on the same turn at the same time and does not wait for
it. Whoever stores results first wins (``store`` says how the page still sees text-only results
first); the gpu task ranks by text itself when the text stage failed or is late: a turn is
complete whatever happens to its text stage. A rerun after a lost gpu attempt redoes the text
stage itself, first, since the dead attempt's output is removed.

Between its claim and its final results the gpu task writes nothing: the models never wait for the
database. A failed attempt stores its refinement with the failure. Every write is fenced by the
attempt number (``store``). Events are built in ``payloads``.

Models are imported inside the functions: this module is imported by the web process too.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection
from django.utils import timezone

from catalog.models import CatalogItem
from catalog.services.vectors import Hit
from dar_site.connections import replace_if_broken
from retrieval.models import Preview, Turn
from retrieval.services import events
from workers.models.protocols import Dialogue, Refinement

from . import asking, payloads, previews, ranking, store, text_stage
from .store import Claim, Superseded

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

T = TypeVar("T")
# Candidates whose titles the LLM sees when it thinks of a clarifying question.
QUESTION_CANDIDATES = 5


class TurnTimeout(Exception):
    pass


def turn_seed(session_id: object, index: int) -> int:
    """Deterministic generation seed per session and turn (a rerun paints the same previews)."""
    digest = hashlib.sha256(f"{session_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


# --- the gpu task ----------------------------------------------------------------------------


def run_turn(turn_id: int) -> None:
    """Run a turn's gpu stages; a no-op for a turn already finished (redelivered task).

    Raises ``TurnNotReady`` while the session's previous turn is unfinished (the task retries).
    Every failure ends the turn as FAILED with an ``error`` event; nothing is re-raised.
    """
    with store.derived_writes():
        claimed = store.claim(turn_id)
        if claimed is not None:
            _TurnRun(claimed).run()


@dataclass
class _TurnRun:
    claim: Claim
    timings: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    # Whether the turn's refinement fields hold this attempt's refinement (stored with the final
    # results, or with the failure).
    refined: bool = False

    @property
    def turn(self) -> Turn:
        return self.claim.turn

    @property
    def attempt(self) -> int:
        return self.turn.attempts

    def run(self) -> None:
        turn = self.turn
        self._emit(payloads.started_event(turn, self.attempt))
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

        dialogue = ranking.dialogue_for(self.turn)
        k = settings.DAR_PREVIEWS_PER_TURN
        if self.attempt > 1:
            # A rerun: the text stage's results went with the lost attempt; the page gets them
            # again first.
            self._text_stage()

        refiner = self._stage("refine", get_refiner)
        refinement = self._stage("refine", lambda: self._refine(refiner, dialogue, k))
        self._keep_refinement(refinement, k)

        images, seed = self._stage("generate", lambda: self._generate(k))
        files = previews.write(self.turn, self.attempt, self.turn.prompts, images, seed)
        try:
            hits, items = self._stage("rank", lambda: self._final_ranking(images))
            # Waiting for the files, if the ranking was quicker, is part of painting previews.
            stored = self._stage("generate", files.result)
            # The question needs only the ranking: the LLM asks it while the results are stored.
            question = self._start_asking(refiner, dialogue, hits, items)
            self._store_final(hits, items, stored, done=question is None)
        except BaseException:
            previews.discard(files)
            raise
        if question is not None:
            # The final results are out: from here on the turn succeeds. A question is optional,
            # so running out of time while asking only drops the question.
            self._finish(self._question(question))

    def _text_stage(self) -> bool:
        """Rank by text and publish the provisional results; returns whether it found any."""
        liked, disliked = self.claim.liked, self.claim.disliked
        found = self._stage(
            "text", lambda: text_stage.text_ranking(self.turn, self._catalog_id, liked, disliked)
        )
        if not text_stage.publish(self.turn, found, attempt=self.attempt):
            # The interactive worker's results came first: its time is the stage's.
            self.timings.pop("text", None)
        return bool(found.hits)

    @property
    def _catalog_id(self) -> int:
        return int(self.turn.session.catalog_id)

    def _refine(self, refiner: Any, dialogue: Dialogue, k: int) -> Refinement:
        from workers.models import grounding, language

        latest = (dialogue.rounds or [dialogue.caption])[-1]
        foreign = language.detect(latest)
        if foreign and not getattr(refiner, "translates", False):
            # The configured models read English only: search with the shopper's own words and
            # say so, rather than let the LLM make something else of them.
            log.info("turn %s: message in %s, the LLM does not translate", self.turn.pk, foreign)
            self._emit(payloads.language_notice(self.turn, foreign))
            refinement = grounding.grounded_refinement(dialogue, max(k, 1), f"language: {foreign}")
        else:
            try:
                refinement = refiner.refine(dialogue, max(k, 1))
            except (SoftTimeLimitExceeded, Superseded):
                raise
            except Exception:
                # The refiner is supposed to fall back by itself; if it raises anyway, searching
                # with the shopper's own words beats failing the turn.
                log.exception("turn %s: refiner raised, using the dialogue text", self.turn.pk)
                refinement = grounding.grounded_refinement(dialogue, max(k, 1), "refiner failed")
            # Invented, too long, or missing the latest message: repaired or replaced.
            refinement = grounding.apply(
                refinement, dialogue, max(k, 1), source=getattr(refiner, "name", "")
            )
        if refinement.fallback:
            log.info(
                "turn %s: grounded fallback description %r (%s)",
                self.turn.pk,
                refinement.description,
                refinement.note,
            )
        return grounding.usable(refinement, dialogue, k)

    def _keep_refinement(self, refinement: Refinement, k: int) -> None:
        """Announce the refinement at once; it is stored with the final results (or with the
        failure), so no write stands between the LLM and the generator."""
        self.turn.refined_query = refinement.description
        self.turn.prompts = refinement.prompts[:k]
        self.turn.refinement_fallback = refinement.fallback
        self.refined = True
        self._emit(payloads.refined_event(self.turn, note=refinement.note))

    def _generate(self, k: int) -> tuple[list[Image.Image], int]:
        """The previews' images and the seed of the first."""
        seed = turn_seed(self.turn.session_id, self.turn.index)
        if k == 0 or not self.turn.prompts:
            return [], seed
        from workers.models.registry import get_generator

        return get_generator().generate(list(self.turn.prompts), seed), seed

    def _final_ranking(self, images: list[Image.Image]) -> tuple[list[Hit], dict[int, CatalogItem]]:
        from workers.models.registry import get_encoder

        liked, disliked = self.claim.liked, self.claim.disliked
        encoder = get_encoder()
        weights = ranking.paper_weights(self.turn.index)
        dialogue = ranking.dialogue_for(self.turn)
        description = self.turn.refined_query or dialogue.as_text()
        # The dialogue's own text (the text-first query) beside the refinement, when weighted.
        said, said_weight = ranking.query_text(dialogue), settings.DAR_FINAL_DIALOGUE_WEIGHT
        text_vec = encoder.encode_texts([description])[0]
        if said_weight > 0 and said != description:
            text_vec = ranking.mix(text_vec, encoder.encode_texts([said])[0], said_weight)
        gen_vecs = encoder.encode_images(images) if images else None
        query = ranking.fuse(text_vec, gen_vecs, weights)
        query = ranking.with_feedback(encoder.name, query, liked, disliked)
        self.turn.weights = weights.as_dict()
        self.turn.encoder_name = encoder.name
        hits = ranking.rank(
            catalog_id=self._catalog_id,
            model_name=encoder.name,
            query=query,
            exclude=disliked if settings.DAR_FEEDBACK_EXCLUDE_DISLIKED else [],
            product_text=ranking.product_text(
                description, weights.product_text, also=said, also_weight=said_weight
            ),
            filters=ranking.filters_of(self.turn),
        )
        return hits, ranking.items_of(hits)

    def _start_asking(
        self, refiner: Any, dialogue: Dialogue, hits: list[Hit], items: dict[int, CatalogItem]
    ) -> Future[asking.Asked] | None:
        if not settings.DAR_ASK_QUESTIONS or self._past_deadline():
            return None
        titles = [str(items[h.item_id]) for h in hits[:QUESTION_CANDIDATES] if h.item_id in items]
        asked = store.questions_before(self.turn)
        dialogue = Dialogue(dialogue.caption, list(dialogue.rounds), questions=asked)
        return asking.start(refiner, dialogue, titles, self.turn.pk)

    def _question(self, pending: Future[asking.Asked]) -> str | None:
        left = settings.DAR_TURN_TIME_LIMIT - (time.monotonic() - self.started)
        asked = asking.wait(pending, left, self.turn.pk)
        if asked is None:
            return None
        self.timings["ask"] = asked.ms
        if asked.question and store.has_newer_turn(self.turn):
            # The shopper has sent the next message meanwhile: the question would answer nothing.
            log.info("turn %s: question dropped, a newer message arrived", self.turn.pk)
            return None
        return asked.question

    # --- writes, each fenced by the attempt number ---------------------------------------------

    def _store_final(
        self, hits: list[Hit], items: dict[int, CatalogItem], stored: list[Preview], *, done: bool
    ) -> None:
        """Store and announce the final results, after provisional ones: when the text stage has
        stored none yet, this attempt ranks by text and publishes them itself first."""
        if self._write_final(hits, items, stored, done=done):
            return
        # The text stage failed or is late: rank by text here (provisional results go out
        # first), then store the final ones. A catalog with nothing to rank has no provisional
        # rows to wait for: its (empty) results are final at once.
        found_any = self._text_stage()
        if not self._write_final(hits, items, stored, done=done, after_provisional=found_any):
            raise RuntimeError(f"turn {self.turn.pk}: provisional results vanished")

    def _write_final(
        self,
        hits: list[Hit],
        items: dict[int, CatalogItem],
        stored: list[Preview],
        *,
        done: bool,
        after_provisional: bool = True,
    ) -> bool:
        """Store the refinement, the previews' rows and the final results in one statement and
        announce them together; with ``done``, the turn ends with them (no question to wait
        for). One try: returns False (storing nothing) while the turn has no provisional
        results."""
        results = ranking.result_rows(self.turn, hits, items, final=True)
        values = self._found()
        if done:
            values |= self._ended(None)
        timings = store.store_final(
            self.turn,
            self.attempt,
            values,
            dict(self.timings),
            stored,
            results,
            after_provisional=after_provisional,
        )
        if timings is None:
            return False
        # The text stage's timing, stored by whoever ran it, joins this attempt's.
        self.timings = timings
        for name, value in values.items():
            setattr(self.turn, name, value)
        self.turn.timings = timings
        self._emit(
            payloads.previews_event(self.turn, stored),
            payloads.results_event(self.turn, results, final=True),
            *(payloads.done_events(self.turn, self.timings, None) if done else ()),
        )
        return True

    def _found(self) -> dict[str, Any]:
        """What this attempt found, stored with its final results."""
        return {
            **self._refinement(),
            "weights": self.turn.weights,
            "encoder_name": self.turn.encoder_name,
        }

    def _refinement(self) -> dict[str, Any]:
        if not self.refined:
            return {}
        turn = self.turn
        return {
            "refined_query": turn.refined_query,
            "prompts": turn.prompts,
            "refinement_fallback": turn.refinement_fallback,
        }

    def _ended(self, question: str | None) -> dict[str, Any]:
        """The values that end the turn successfully; its timings are complete from here on."""
        self.timings["total"] = self._elapsed_ms()
        if self.turn.started_at:
            queued = self.turn.started_at - self.turn.created_at
            self.timings["queued"] = max(0, round(queued.total_seconds() * 1000))
        return {
            "status": Turn.Status.DONE,
            "question": question or "",
            "finished_at": timezone.now(),
        }

    def _finish(self, question: str | None) -> None:
        store.update_owned(
            self.turn, self.attempt, **self._ended(question), timings=dict(self.timings)
        )
        self._emit(*payloads.done_events(self.turn, self.timings, question))

    def _fail(self, code: str, message: str) -> None:
        # The failure may be the database's (a restart, a killed backend): its record then goes
        # out on a fresh connection, not on the broken one.
        replace_if_broken(connection)
        self.timings["total"] = self._elapsed_ms()
        self.turn.timings = {**self.turn.timings, **self.timings}
        store.fail_turn(
            self.turn,
            code,
            message,
            attempt=self.attempt,
            statuses=[Turn.Status.RUNNING],
            # What the LLM made of the dialogue is worth keeping for the analysts.
            found=self._refinement(),
        )

    # --- helpers ---------------------------------------------------------------------------

    def _stage(self, name: str, work: Callable[[], T]) -> T:
        """Run part of a stage, adding its wall time to the stage; stop past the turn's limit."""
        # Celery's soft limit interrupts a stage from outside (prefork pool); this check also
        # covers pools without time limits (threads) and stops before the next stage starts.
        start = time.monotonic()
        result = work()
        self.timings[name] = self.timings.get(name, 0) + round((time.monotonic() - start) * 1000)
        if self._past_deadline():
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
