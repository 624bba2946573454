"""A turn's text stage runs as a task of its own, on the interactive queue and worker, so first
results never wait behind another session's LLM work; the gpu task does the rest, never redoes
the text stage, and still completes the turn when the text stage failed or came too late."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from dar_site.celery import app
from dar_site.processes import interactive_worker_command, worker_command
from retrieval.models import SearchSession, Turn, TurnResult
from retrieval.turn import pipeline, store, submit, tasks, text_stage
from tests.factories import (
    EventRecorder,
    SearchSessionFactory,
    TurnFactory,
    TurnResultFactory,
    embedded_catalog,
    new_turn,
)
from tests.faultkit import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = "a small red ceramic mug"


def _session(n_items: int = 6) -> SearchSession:
    return SearchSessionFactory.create(catalog=embedded_catalog(n_items))


def _results(turn: Turn, final: bool) -> list[tuple[int, int, int, float]]:
    rows = turn.results.filter(final=final).order_by("rank")
    return list(rows.values_list("pk", "item_id", "rank", "score"))


def _expected_text_ranking(turn: Turn) -> list[int]:
    """The provisional ranking computed independently of both tasks."""
    found = text_stage.text_ranking(turn, turn.session.catalog_id, [], [])
    return [h.item_id for h in found.hits]


def test_text_stage_ranks_with_the_sessions_feedback(turn_models: None) -> None:
    session = _session()
    first = new_turn(session, MESSAGE)
    ranked = _expected_text_ranking(first)
    liked, disliked = ranked[-1], ranked[0]
    submit.record_feedback(session, liked, 1)
    submit.record_feedback(session, disliked, -1)
    turn = new_turn(session, "with a white handle")  # the first turn's outcome does not matter
    Turn.objects.filter(pk=first.pk).update(status=Turn.Status.DONE)

    text_stage.run_text_stage(turn.pk)

    expected = text_stage.text_ranking(turn, session.catalog_id, [liked], [disliked])
    assert [item for _, item, _, _ in _results(turn, final=False)] == [
        h.item_id for h in expected.hits
    ]
    assert disliked not in [h.item_id for h in expected.hits]  # hidden, as the setting says
    without = text_stage.text_ranking(turn, session.catalog_id, [], [])
    assert [h.score for h in expected.hits] != [h.score for h in without.hits]


def test_text_stage_publishes_first_and_the_gpu_task_does_not_redo_it(
    turn_models: None, monkeypatch: Any
) -> None:
    session = _session()
    turn = new_turn(session, MESSAGE)
    with EventRecorder(session.pk) as events:
        text_stage.run_text_stage(turn.pk)
        events.wait_for(lambda evs: bool(evs))
        turn.refresh_from_db()
        provisional = _results(turn, final=False)
        assert [item for _, item, _, _ in provisional] == _expected_text_ranking(turn)
        assert turn.status == Turn.Status.QUEUED and turn.attempts == 0  # the gpu task's to start
        assert turn.encoder_name and set(turn.timings) == {"text"}
        (first,) = events.events
        assert (first["type"], first["final"]) == ("results", False)
        assert [i["id"] for i in first["items"]] == [item for _, item, _, _ in provisional]

        # The gpu task must not rank by text again: make that fail loudly if it tried.
        def no_second_text_stage(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the gpu task redid the text stage")

        monkeypatch.setattr(text_stage, "text_ranking", no_second_text_stage)
        pipeline.run_turn(turn.pk)
        events.wait_for(lambda evs: any(e["type"] in ("turn.done", "error") for e in evs))
    turn.refresh_from_db()
    assert turn.status == Turn.Status.DONE, turn.error
    assert _results(turn, final=False) == provisional  # the same rows, untouched
    assert len(_results(turn, final=True)) == 6
    assert [e["final"] for e in events.of("results")] == [False, True]
    # The text stage's timing, stored by the interactive worker, is part of the turn's.
    assert {"text", "refine", "generate", "rank", "total"} <= set(turn.timings)
    assert events.of("turn.done")[0]["timings"] == turn.timings


def test_a_failed_text_stage_leaves_the_turn_to_the_gpu_task(
    turn_models: None, monkeypatch: Any
) -> None:
    session = _session()
    turn = new_turn(session, MESSAGE)
    real_text_ranking = text_stage.text_ranking

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the interactive worker lost its database")

    with EventRecorder(session.pk) as events:
        monkeypatch.setattr(text_stage, "text_ranking", broken)
        text_stage.run_text_stage(turn.pk)  # logs, raises nothing, fails nothing
        turn.refresh_from_db()
        assert turn.status == Turn.Status.QUEUED and not turn.results.exists()

        monkeypatch.setattr(text_stage, "text_ranking", real_text_ranking)
        pipeline.run_turn(turn.pk)
        events.wait_for(lambda evs: any(e["type"] in ("turn.done", "error") for e in evs))
    turn.refresh_from_db()
    assert turn.status == Turn.Status.DONE, turn.error
    # A complete turn all the same, with the text-only results published before the final ones.
    provisional = [item for _, item, _, _ in _results(turn, final=False)]
    assert provisional == _expected_text_ranking(turn)
    assert len(_results(turn, final=True)) == 6
    kinds = [(e["type"], e.get("final")) for e in events.events]
    assert kinds.index(("results", False)) < kinds.index(("results", True))
    assert not events.of("error")
    assert "text" in turn.timings


def test_a_late_or_redelivered_text_stage_changes_nothing(turn_models: None) -> None:
    session = _session()
    turn = new_turn(session, MESSAGE)
    text_stage.run_text_stage(turn.pk)
    once = _results(turn, final=False)
    with EventRecorder(session.pk) as events:
        text_stage.run_text_stage(turn.pk)  # redelivered: the turn already has its results
        pipeline.run_turn(turn.pk)
        events.wait_for(lambda evs: any(e["type"] == "turn.done" for e in evs))
        text_stage.run_text_stage(turn.pk)  # after the whole turn
        turn.refresh_from_db()
        timings = dict(turn.timings)
        final = _results(turn, final=True)
        # An event the redundant stages sent would arrive before this marker.
        from retrieval.services import events as notify

        notify.emit(session.pk, {"type": "marker", "turn": None})
        events.wait_for(lambda evs: evs[-1]["type"] == "marker")
    assert _results(turn, final=False) == once
    assert _results(turn, final=True) == final
    turn.refresh_from_db()
    assert turn.timings == timings
    assert [e["final"] for e in events.of("results")] == [True]


def test_text_results_never_follow_final_ones(redis_client: Any) -> None:
    # A text stage that finishes computing after the gpu task stored the final ranking: nothing
    # is stored, nothing is sent (the page would otherwise replace final results by text ones).
    turn = TurnFactory.create(index=0, status=Turn.Status.RUNNING, attempts=1)
    result = TurnResultFactory.create(turn=turn, final=True, rank=1)
    late = text_stage.TextRanking("some-encoder", [], {}, ms=1)
    with EventRecorder(turn.session_id) as events:
        assert text_stage.publish(turn, late) is False
        from retrieval.services import events as notify

        notify.emit(turn.session_id, {"type": "marker", "turn": None})
        events.wait_for(lambda evs: bool(evs))
    assert [e["type"] for e in events.events] == ["marker"]
    assert list(TurnResult.objects.filter(turn=turn).values_list("pk", flat=True)) == [result.pk]
    turn.refresh_from_db()
    assert turn.encoder_name == "" and turn.timings == {}


def test_text_stage_of_a_finished_or_superseded_turn_stores_nothing(redis_client: Any) -> None:
    found = text_stage.TextRanking("some-encoder", [], {}, ms=1)
    failed = TurnFactory.create(index=0, status=Turn.Status.FAILED, attempts=1)
    assert text_stage.publish(failed, found) is False
    # A gpu attempt that lost the turn to a newer one must stop, not write.
    running = TurnFactory.create(index=0, status=Turn.Status.RUNNING, attempts=2)
    with pytest.raises(store.Superseded):
        text_stage.publish(running, found, attempt=1)
    assert not TurnResult.objects.filter(turn__in=[failed, running]).exists()


def test_text_stage_waits_for_the_previous_turn() -> None:
    session = SearchSessionFactory.create()
    TurnFactory.create(session=session, index=0, status=Turn.Status.RUNNING, attempts=1)
    waiting = TurnFactory.create(session=session, index=1)
    with pytest.raises(store.TurnNotReady) as wait:
        text_stage.run_text_stage(waiting.pk)
    assert wait.value.delay == text_stage.TEXT_STAGE_POLL
    assert not waiting.results.exists()


@pytest.mark.slow
def test_first_results_do_not_wait_for_a_gpu_worker(
    turn_models: None, start_worker: Any, settings: Any
) -> None:
    session = _session()
    with EventRecorder(session.pk) as events:
        # Only the interactive worker runs: every gpu worker is busy elsewhere (or down).
        with start_worker("interactive", [settings.CELERY_INTERACTIVE_QUEUE]):
            turn = submit.submit_message(session, MESSAGE)
            events.wait_for(lambda evs: any(e["type"] == "results" for e in evs))
        turn.refresh_from_db()
        assert turn.status == Turn.Status.QUEUED and turn.attempts == 0
        provisional = _results(turn, final=False)
        assert len(provisional) == 6

        # A gpu worker frees up: it finishes the turn from there.
        with start_worker("gpu", [settings.CELERY_GPU_QUEUE, settings.CELERY_DEFAULT_QUEUE]):
            events.wait_for(lambda evs: any(e["type"] in ("turn.done", "error") for e in evs))
            wait_for(
                lambda: Turn.objects.get(pk=turn.pk).status == Turn.Status.DONE,
                timeout=30,
                what="the turn row to finish",
            )
    assert _results(turn, final=False) == provisional
    assert len(_results(turn, final=True)) == 6
    kinds = [(e["type"], e.get("final")) for e in events.events]
    assert kinds[:2] == [("turn.accepted", None), ("results", False)]
    assert kinds[-1] == ("turn.done", None)
    assert kinds.count(("results", False)) == 1


def test_tasks_are_routed_to_their_workers() -> None:
    route = app.amqp.router.route
    assert route({}, tasks.TEXT_STAGE_TASK)["queue"].name == settings.CELERY_INTERACTIVE_QUEUE
    assert route({}, tasks.RUN_TURN_TASK)["queue"].name == settings.CELERY_GPU_QUEUE
    # `make demo` (and the load benchmark) run one worker per kind, on those queues only.
    gpu = worker_command(threads=4)
    interactive = interactive_worker_command(threads=4)
    assert gpu[gpu.index("--queues") + 1].split(",") == [
        settings.CELERY_GPU_QUEUE,
        settings.CELERY_DEFAULT_QUEUE,
    ]
    assert interactive[interactive.index("--queues") + 1] == settings.CELERY_INTERACTIVE_QUEUE
    assert interactive[interactive.index("--pool") + 1] == "threads"


def test_the_deployment_runs_a_worker_for_each_queue() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).parent.parent / "docker-compose.yml").read_text())
    served = {}
    for name, service in compose["services"].items():
        command = service.get("command") or []
        if "worker" in command and "celery" in command:
            served[name] = command[command.index("--queues") + 1].split(",")
    # The default queue names (DAR_REDIS_PREFIX "dar"), each served, the text stage on its own.
    assert served == {"worker": ["dar.gpu", "dar.default"], "interactive": ["dar.interactive"]}
