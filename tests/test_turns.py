"""The turn pipeline: stages, stored records, DAR fusion, feedback, ordering, failures, sweeper."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from celery import current_app
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image

from catalog.models import CatalogItem, ItemEmbedding
from catalog.services import vectors
from retrieval.models import Feedback, Preview, SearchSession, Turn, TurnResult
from retrieval.turn import (
    asking,
    pipeline,
    previews,
    ranking,
    store,
    submit,
    sweep,
    tasks,
    text_stage,
)
from retrieval.turn.tasks import sweep_stuck_turns
from tests.factories import (
    CatalogItemFactory,
    EventRecorder,
    PreviewFactory,
    SearchSessionFactory,
    TurnFactory,
    TurnResultFactory,
    embedded_catalog,
    new_turn,
)
from tests.faultkit import wait_for
from workers.models.protocols import Dialogue

pytestmark = pytest.mark.django_db(transaction=True)


def _encoder() -> Any:
    from workers.models.registry import get_encoder

    return get_encoder()


def _explicit_ranking(
    session: SearchSession,
    query_terms: list[tuple[float, np.ndarray]],
    exclude: set[int],
    product_text: tuple[float, str, np.ndarray] | None = None,
) -> list[tuple[int, float]]:
    """Score-level fusion in numpy over every stored item vector of the catalog: one
    similarity per query term (text, each preview, liked and disliked items), weighted and
    summed, plus the weighted product-text similarity (0 for items without product text)."""
    encoder = _encoder()
    ids = list(CatalogItem.objects.filter(catalog=session.catalog).values_list("pk", flat=True))
    stored = vectors.vectors_for(
        space=ItemEmbedding.Space.IMAGE, model_name=encoder.name, item_ids=ids
    )
    scores = {
        item: sum(weight * float(vec @ term) for weight, term in query_terms)
        for item, vec in stored.items()
        if item not in exclude
    }
    if product_text is not None:
        weight, model_name, query = product_text
        texts = vectors.vectors_for(
            space=ItemEmbedding.Space.TEXT, model_name=model_name, item_ids=ids
        )
        for item in scores:
            scores[item] += weight * float(texts[item] @ query) if item in texts else 0.0
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def _assert_ranking(turn: Turn, final: bool, expected: list[tuple[int, float]]) -> None:
    results = list(turn.results.filter(final=final).order_by("rank"))
    assert [r.rank for r in results] == list(range(1, len(results) + 1))
    assert [r.item_id for r in results] == [item for item, _ in expected[: len(results)]]
    for result, (_, score) in zip(results, expected, strict=False):
        assert result.score == pytest.approx(score, abs=1e-4)


@pytest.mark.slow
def test_turns_store_every_stage_and_rank_by_dar_fusion(turn_models: None, settings: Any) -> None:
    settings.DAR_ASK_QUESTIONS = True
    catalog = embedded_catalog(10)
    session = SearchSessionFactory.create(catalog=catalog)
    encoder = _encoder()

    turn = new_turn(session, "a small red ceramic mug")
    with EventRecorder(session.pk) as events:
        text_stage.run_text_stage(turn.pk)  # the interactive worker's task
        pipeline.run_turn(turn.pk)  # the gpu worker's
        events.wait_for(lambda evs: any(e["type"] == "turn.done" for e in evs))
    turn.refresh_from_db()
    assert turn.status == Turn.Status.DONE and turn.attempts == 1
    assert turn.context == ["a small red ceramic mug"] and turn.encoder_name == encoder.name
    assert turn.refined_query and len(turn.prompts) == settings.DAR_PREVIEWS_PER_TURN
    assert {"text", "refine", "generate", "rank", "ask", "total"} <= set(turn.timings)
    assert events.of("turn.done")[0]["timings"] == turn.timings
    assert turn.weights == ranking.paper_weights(0).as_dict()
    kinds = [e["type"] for e in events.events]
    asked = ["question"] if turn.question else []
    assert kinds == [
        "results",
        "turn.started",
        "query.refined",
        "previews",
        "results",
        *asked,
        "turn.done",
    ]
    assert [e["final"] for e in events.of("results")] == [False, True]
    if turn.question:
        assert events.of("question")[0]["question"] == turn.question

    # Previews: files on disk, seeds fixed per session and turn, prompts stored.
    previews = list(turn.previews.order_by("index"))
    base_seed = pipeline.turn_seed(session.pk, turn.index)
    assert [p.seed for p in previews] == [base_seed + j for j in range(len(previews))]
    assert all(Path(p.image.path).is_file() for p in previews)
    assert events.of("previews")[0]["images"][0]["url"] == previews[0].image.url

    # Provisional results: the dialogue text alone. Final: DAR fusion of the refined text and
    # the previews, recomputed here from what the database stored.
    text_vec = encoder.encode_texts([turn.refined_query])[0]
    dialogue_vec = encoder.encode_texts(["a small red ceramic mug"])[0]
    gen_vecs = encoder.encode_images([Image.open(p.image.path) for p in previews])
    weights = ranking.paper_weights(0)
    _assert_ranking(turn, False, _explicit_ranking(session, [(1.0, dialogue_vec)], set()))
    fused_terms = [(weights.text, text_vec)] + [
        (weights.generated / len(gen_vecs), g) for g in gen_vecs
    ]
    _assert_ranking(turn, True, _explicit_ranking(session, fused_terms, set()))

    # Feedback on turn 0's results steers turn 1 (Rocchio) and hides the disliked item; the
    # product-text term joins in too.
    final = list(turn.results.filter(final=True).order_by("rank"))
    disliked, liked = final[0].item_id, final[-1].item_id
    submit.record_feedback(session, disliked, -1)
    submit.record_feedback(session, liked, 1)
    settings.DAR_ASK_QUESTIONS = False
    settings.DAR_WEIGHT_PRODUCT_TEXT = 0.4
    second = new_turn(session, "with a white handle")
    # The gpu task alone, as when the text stage failed: it ranks by text itself.
    pipeline.run_turn(second.pk)
    second.refresh_from_db()
    assert second.status == Turn.Status.DONE, second.error
    assert second.context == ["a small red ceramic mug", "with a white handle"]
    assert not second.question and "ask" not in second.timings
    assert disliked not in set(second.results.values_list("item_id", flat=True))
    stored = vectors.vectors_for(
        space=ItemEmbedding.Space.IMAGE, model_name=encoder.name, item_ids=[liked, disliked]
    )
    rocchio = [
        (settings.DAR_FEEDBACK_LIKE, stored[liked]),
        (-settings.DAR_FEEDBACK_DISLIKE, stored[disliked]),
    ]
    w1 = ranking.paper_weights(1)
    previews1 = list(second.previews.order_by("index"))
    gen1 = encoder.encode_images([Image.open(p.image.path) for p in previews1])
    terms = [(w1.text, encoder.encode_texts([second.refined_query])[0])]
    terms += [(w1.generated / len(gen1), g) for g in gen1] + rocchio
    from workers.models.registry import get_text_embedder

    embedder = get_text_embedder()
    product = (0.4, embedder.name, embedder.encode([second.refined_query])[0])
    assert second.weights["product_text"] == pytest.approx(0.4)
    _assert_ranking(second, True, _explicit_ranking(session, terms, {disliked}, product))
    # The provisional ranking of turn 1: the dialogue text, feedback and product text.
    dialogue1 = "a small red ceramic mug, with a white handle"
    provisional = [(1.0, encoder.encode_texts([dialogue1])[0]), *rocchio]
    product1 = (0.4, embedder.name, embedder.encode([dialogue1])[0])
    _assert_ranking(second, False, _explicit_ranking(session, provisional, {disliked}, product1))
    assert previews1[0].seed != previews[0].seed

    # A redelivered task for a finished turn does nothing.
    before = list(second.results.values_list("pk", flat=True))
    pipeline.run_turn(second.pk)
    second.refresh_from_db()
    assert second.attempts == 1 and list(second.results.values_list("pk", flat=True)) == before


@pytest.mark.slow
def test_redelivered_running_turn_restarts_cleanly(
    turn_models: None, settings: Any, celery_worker: Any
) -> None:
    settings.DAR_PREVIEWS_PER_TURN = 2
    catalog = embedded_catalog(6)
    session = SearchSessionFactory.create(catalog=catalog)
    # What a worker that died mid-turn leaves behind: RUNNING, a preview file, some results.
    turn = new_turn(session, "a green wool scarf")
    Turn.objects.filter(pk=turn.pk).update(
        status=Turn.Status.RUNNING, attempts=1, started_at=timezone.now(), refined_query="stale"
    )
    stale_preview = PreviewFactory.create(turn=turn, index=0)
    stale_file = Path(stale_preview.image.path)
    TurnResultFactory.create(turn=turn, final=False, rank=1)
    assert stale_file.is_file()

    with EventRecorder(session.pk) as events:
        current_app.send_task(tasks.RUN_TURN_TASK, args=[turn.pk])  # the redelivered message
        events.wait_for(lambda evs: any(e["type"] in ("turn.done", "error") for e in evs))
    turn.refresh_from_db()
    assert turn.status == Turn.Status.DONE and turn.attempts == 2, turn.error
    assert turn.refined_query != "stale"
    assert not stale_file.exists()
    previews = list(turn.previews.order_by("index"))
    assert [p.index for p in previews] == [0, 1] and stale_preview.pk not in {
        p.pk for p in previews
    }
    assert [p.seed for p in previews] == [pipeline.turn_seed(session.pk, 0) + j for j in (0, 1)]
    item_ids = set(CatalogItem.objects.filter(catalog=catalog).values_list("pk", flat=True))
    assert set(turn.results.values_list("item_id", flat=True)) <= item_ids
    assert turn.results.filter(final=True).count() == 6


def test_a_turn_that_keeps_killing_its_worker_fails(redis_client: Any) -> None:
    turn = TurnFactory.create(
        index=0, status=Turn.Status.RUNNING, attempts=3, started_at=timezone.now()
    )
    with EventRecorder(turn.session_id) as events:
        pipeline.run_turn(turn.pk)
        (error,) = events.wait_for(lambda evs: bool(evs))
    turn.refresh_from_db()
    assert (turn.status, turn.error_code) == (Turn.Status.FAILED, "worker_lost")
    assert (error["type"], error["code"], error["turn"]) == ("error", "worker_lost", 0)


def test_turns_wait_for_their_predecessor() -> None:
    session = SearchSessionFactory.create()
    TurnFactory.create(
        session=session, index=0, status=Turn.Status.RUNNING, started_at=timezone.now()
    )
    waiting = TurnFactory.create(session=session, index=1)
    with pytest.raises(store.TurnNotReady):
        pipeline.run_turn(waiting.pk)
    waiting.refresh_from_db()
    assert waiting.status == Turn.Status.QUEUED and waiting.attempts == 0


def test_turn_over_its_time_limit_fails_with_timeout(turn_models: None, settings: Any) -> None:
    catalog = embedded_catalog(3)
    session = SearchSessionFactory.create(catalog=catalog)
    turn = new_turn(session, "a yellow raincoat")
    settings.DAR_TURN_TIME_LIMIT = 0  # over the limit as soon as the first stage ends
    with EventRecorder(session.pk) as events:
        pipeline.run_turn(turn.pk)
        events.wait_for(lambda evs: any(e["type"] == "error" for e in evs))
    turn.refresh_from_db()
    assert (turn.status, turn.error_code) == (Turn.Status.FAILED, "timeout")
    assert turn.finished_at is not None and "total" in turn.timings
    assert events.of("error")[0]["code"] == "timeout"
    assert not events.of("turn.done")


def test_a_turn_failing_after_its_previews_were_painted_leaves_no_files(
    turn_models: None, monkeypatch: Any, settings: Any
) -> None:
    # The preview files are written beside the final ranking; their rows would be stored with the
    # final results. When the ranking fails, the turn stores neither and removes the files.
    catalog = embedded_catalog(3)
    session = SearchSessionFactory.create(catalog=catalog)
    turn = new_turn(session, "a green wool scarf")
    written: list[Preview] = []
    write = previews._write

    def recording(*args: Any) -> list[Preview]:
        written.extend(write(*args))
        return written

    def unavailable(**kwargs: Any) -> Any:
        raise RuntimeError("the vector index is unavailable")

    monkeypatch.setattr(previews, "_write", recording)
    monkeypatch.setattr(ranking, "rank", unavailable)
    with EventRecorder(session.pk) as events:
        pipeline.run_turn(turn.pk)
        events.wait_for(lambda evs: any(e["type"] == "error" for e in evs))
    turn.refresh_from_db()
    assert (turn.status, turn.error_code) == (Turn.Status.FAILED, "internal")
    assert not Preview.objects.filter(turn=turn).exists() and not turn.results.exists()
    assert not events.of("previews") and not events.of("results")
    # What the LLM made of the dialogue is kept with the failure, for the analysts.
    refined = events.of("query.refined")[0]
    assert turn.refined_query == refined["description"] and turn.refined_query
    assert len(turn.prompts) == settings.DAR_PREVIEWS_PER_TURN
    assert len(written) == settings.DAR_PREVIEWS_PER_TURN > 0
    names = [str(p.image.name) for p in written]
    wait_for(
        lambda: not any(default_storage.exists(name) for name in names),
        timeout=30,
        what="the unstored preview files to be removed",
    )


def test_the_question_is_asked_while_the_final_results_are_stored(
    turn_models: None, monkeypatch: Any, settings: Any
) -> None:
    from workers.models.registry import get_refiner

    settings.DAR_ASK_QUESTIONS = True
    session = SearchSessionFactory.create(catalog=embedded_catalog(4))
    turn = new_turn(session, "a red wool hat")
    asked = threading.Event()
    candidates: list[list[str]] = []

    def ask(dialogue: Any, titles: list[str]) -> str:
        candidates.append(titles)
        asked.set()
        return "  Do you want a pompom?  "

    monkeypatch.setattr(get_refiner(), "ask", ask)
    save_final = pipeline._TurnRun._write_final

    def once_asking(run: Any, *args: Any, **kwargs: Any) -> bool:
        # Stored in sequence (results, then the question), this would wait in vain.
        assert asked.wait(60), "the question was not asked before the results were stored"
        return bool(save_final(run, *args, **kwargs))

    monkeypatch.setattr(pipeline._TurnRun, "_write_final", once_asking)
    with EventRecorder(session.pk) as events:
        text_stage.run_text_stage(turn.pk)
        pipeline.run_turn(turn.pk)
        events.wait_for(lambda evs: any(e["type"] in ("turn.done", "error") for e in evs))
    turn.refresh_from_db()
    assert turn.status == Turn.Status.DONE, turn.error
    assert turn.question == "Do you want a pompom?" and "ask" in turn.timings
    final = list(turn.results.filter(final=True).order_by("rank"))
    assert candidates == [[str(r.item) for r in final[: pipeline.QUESTION_CANDIDATES]]]
    kinds = [e["type"] for e in events.events]
    assert kinds[-4:] == ["previews", "results", "question", "turn.done"]
    assert events.of("question")[0]["question"] == turn.question


def test_a_question_that_fails_or_comes_too_late_is_dropped() -> None:
    class Failing:
        def ask(self, dialogue: Any, titles: list[str]) -> str:
            raise RuntimeError("the LLM is out of memory")

    dialogue = Dialogue(caption="a red wool hat", rounds=[])
    failed = asking.start(Failing(), dialogue, ["a hat"], turn_id=1)
    assert asking.wait(failed, 60, turn_id=1) == asking.Asked(None, failed.result().ms)
    never: Future[asking.Asked] = Future()  # an LLM still thinking when the turn's time is up
    assert asking.wait(never, 0.05, turn_id=1) is None


def test_the_final_write_is_one_fenced_statement_after_the_provisional_results() -> None:
    session = SearchSessionFactory.create()
    items = CatalogItemFactory.create_batch(3, catalog=session.catalog)
    turn = TurnFactory.create(session=session, status=Turn.Status.RUNNING, attempts=2)
    turn.timings = {"text": 9}
    Turn.objects.filter(pk=turn.pk).update(timings=turn.timings)
    previews = [Preview(turn=turn, index=0, prompt="a red hat", seed=7, image="previews/h.png")]
    results = [
        TurnResult(turn=turn, item=item, final=True, rank=r, score=1 - r / 10)
        for r, item in enumerate(items, start=1)
    ]
    found = {"refined_query": "a red hat", "prompts": ["a red hat"], "weights": {"text": 0.8}}

    def final_write(attempt: int = 2) -> dict[str, int] | None:
        return store.store_final(turn, attempt, found, {"rank": 4}, previews, results)

    # No provisional results yet: nothing is written.
    assert final_write() is None
    assert not turn.previews.exists() and not turn.results.exists()
    TurnResultFactory.create(turn=turn, item=items[0], final=False, rank=1, score=0.5)
    with pytest.raises(store.Superseded):
        final_write(attempt=1)  # an older attempt
    with CaptureQueriesContext(connection) as queries:
        assert final_write() == {"text": 9, "rank": 4}
    assert len(queries) == 1
    turn.refresh_from_db()
    assert (turn.refined_query, turn.prompts, turn.weights) == (
        "a red hat",
        ["a red hat"],
        {"text": 0.8},
    )
    assert turn.status == Turn.Status.RUNNING and turn.timings == {"text": 9, "rank": 4}
    stored = list(turn.results.filter(final=True).values_list("item_id", "rank", "score"))
    assert stored == [(r.item_id, r.rank, pytest.approx(r.score)) for r in results]
    assert list(turn.previews.values_list("index", "prompt", "seed", "image")) == [
        (0, "a red hat", 7, "previews/h.png")
    ]


def test_a_catalog_with_nothing_embedded_ends_the_turn_with_no_results(turn_models: None) -> None:
    """Nothing to rank leaves no provisional rows to fence on: the turn ends done and empty, it
    does not fail with "provisional results vanished" (found trying the product)."""
    session = SearchSessionFactory.create()
    CatalogItemFactory.create_batch(2, catalog=session.catalog)  # uploaded, not embedded yet
    turn = new_turn(session, "a small red ceramic mug")
    with EventRecorder(session.pk) as events:
        text_stage.run_text_stage(turn.pk)
        pipeline.run_turn(turn.pk)
        events.wait_for(lambda evs: any(e["type"] == "turn.done" for e in evs))
    turn.refresh_from_db()
    assert turn.status == Turn.Status.DONE and not turn.error_code
    assert not turn.results.exists()
    finals = [e for e in events.events if e["type"] == "results" and e["final"]]
    assert finals and finals[0]["items"] == []
    assert not events.of("error")


def test_a_turns_tasks_commit_without_waiting_for_the_wal_flush(
    turn_models: None, monkeypatch: Any, settings: Any
) -> None:
    # Their writes are derived from the stored message (retrieval/services/store.py); the
    # setting ends with the task, since workers keep their connection for the next one.
    def synchronous_commit() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return str(cursor.fetchone()[0])

    seen: list[str] = []
    lock_results, store_final = store._lock_results, store.store_final

    def in_text_stage(turn_id: int) -> None:
        seen.append(synchronous_commit())
        lock_results(turn_id)

    def in_final_write(*args: Any, **kwargs: Any) -> Any:
        seen.append(synchronous_commit())
        return store_final(*args, **kwargs)

    monkeypatch.setattr(store, "_lock_results", in_text_stage)
    monkeypatch.setattr(store, "store_final", in_final_write)
    session = SearchSessionFactory.create(catalog=embedded_catalog(3))
    for async_commit in (True, False):
        settings.DAR_TURN_ASYNC_COMMIT = async_commit
        turn = new_turn(session, f"a blue umbrella, {async_commit}")
        text_stage.run_text_stage(turn.pk)
        pipeline.run_turn(turn.pk)
        turn.refresh_from_db()
        assert turn.status == Turn.Status.DONE and turn.results.filter(final=True).exists()
        assert seen == ["off" if async_commit else "on"] * 2
        assert synchronous_commit() == "on"
        seen.clear()


def test_a_superseded_attempt_writes_nothing(turn_models: None) -> None:
    catalog = embedded_catalog(3)
    session = SearchSessionFactory.create(catalog=catalog)
    turn = new_turn(session, "a leather belt")
    claimed = store.claim(turn.pk)
    assert claimed is not None
    # Meanwhile the sweeper gave up on it: the attempt must not resurrect it.
    store.fail_turn(claimed.turn, "timeout", "too slow")
    pipeline._TurnRun(claimed).run()
    turn.refresh_from_db()
    assert (turn.status, turn.error_code) == (Turn.Status.FAILED, "timeout")
    assert not TurnResult.objects.filter(turn=turn).exists()
    assert not Preview.objects.filter(turn=turn).exists()


def test_sweeper_fails_turns_stuck_past_the_limit(settings: Any) -> None:
    settings.DAR_TURN_TIME_LIMIT = 60
    long_ago = timezone.now() - timedelta(seconds=60 + sweep.SWEEP_GRACE + 5)
    stuck = SearchSessionFactory.create()
    running = TurnFactory.create(
        session=stuck, index=0, status=Turn.Status.RUNNING, started_at=long_ago
    )
    # Queued behind the stuck turn: its clock starts when the predecessor finishes.
    behind = TurnFactory.create(session=stuck, index=1)
    Turn.objects.filter(pk=behind.pk).update(created_at=long_ago)

    lost = SearchSessionFactory.create()
    done = TurnFactory.create(session=lost, index=0, status=Turn.Status.DONE, finished_at=long_ago)
    orphan = TurnFactory.create(session=lost, index=1)  # its task message was lost
    Turn.objects.filter(pk=orphan.pk).update(created_at=long_ago)

    fresh = TurnFactory.create(index=0, status=Turn.Status.RUNNING, started_at=timezone.now())

    with EventRecorder(stuck.pk) as stuck_events, EventRecorder(lost.pk) as lost_events:
        assert sweep_stuck_turns() == 2  # the periodic Celery task
        stuck_events.wait_for(lambda evs: bool(evs))
        lost_events.wait_for(lambda evs: bool(evs))
    for turn in (running, behind, orphan, done, fresh):
        turn.refresh_from_db()
    assert (running.status, running.error_code) == (Turn.Status.FAILED, "timeout")
    assert (orphan.status, orphan.error_code) == (Turn.Status.FAILED, "timeout")
    assert behind.status == Turn.Status.QUEUED
    assert done.status == Turn.Status.DONE and fresh.status == Turn.Status.RUNNING
    assert [(e["type"], e["code"], e["turn"]) for e in stuck_events.events] == [
        ("error", "timeout", 0)
    ]
    assert [(e["code"], e["turn"]) for e in lost_events.events] == [("timeout", 1)]
    # A redelivered task for a swept turn is a no-op.
    pipeline.run_turn(running.pk)
    running.refresh_from_db()
    assert running.status == Turn.Status.FAILED and running.attempts == 0


def test_feedback_is_validated_and_latest_opinion_wins() -> None:
    session = SearchSessionFactory.create()
    item = CatalogItemFactory.create(catalog=session.catalog)
    submit.record_feedback(session, item.pk, 1)
    submit.record_feedback(session, str(item.pk), -1)
    assert list(Feedback.objects.filter(session=session).values_list("value", flat=True)) == [-1]
    assert store.feedback_of(session.pk) == ([], [item.pk])
