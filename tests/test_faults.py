"""Faults with the real services: a worker killed mid-turn, Redis restarted, PostgreSQL connections
dropped mid-write, tasks delivered twice, bursts of messages.

In every case the outcome is a finished turn or a clear error, never a stuck one, and nothing a
shopper said or a shop uploaded is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from celery import Celery
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import OperationalError
from django.test import override_settings
from django.utils import timezone

from catalog.models import Catalog, CatalogItem, ItemEmbedding
from catalog.services import ingest, sources, validation
from dar_site.asgi import application
from dar_site.celery import app
from retrieval.models import SearchSession, Turn, TurnResult
from retrieval.turn import store, submit, sweep, tasks
from tests.factories import (
    CatalogFactory,
    CatalogItemFactory,
    EventRecorder,
    SearchSessionFactory,
    browser_session_key,
    embedded_catalog,
    png_bytes,
)
from tests.faultkit import RedisServer, WorkerProcess, backend_killed_on_insert, wait_for

MESSAGE = "a small red ceramic mug"
TURN_TIMEOUT = 300  # cold offline models on a busy 2-core machine
# The faults are the subject here, not speed: no optional clarifying question (one LLM call less)
# and a turn time limit that a loaded CI machine cannot hit by accident.
FAST_TURNS = {"DAR_ASK_QUESTIONS": False, "DAR_TURN_TIME_LIMIT": 600}
WORKER_ENV = {"DAR_ASK_QUESTIONS": "0", "DAR_TURN_TIME_LIMIT": "600"}


@pytest.fixture
def fast_turns() -> Iterator[None]:
    with override_settings(**FAST_TURNS):
        yield


def _new_session(**fields: Any) -> SearchSession:
    return cast(SearchSession, SearchSessionFactory(**fields))


def _new_catalog() -> Catalog:
    return cast(Catalog, CatalogFactory())


def _turn_outcome(events: EventRecorder, index: int = 0) -> list[dict[str, Any]]:
    return events.wait_for(
        lambda evs: any(e["type"] in ("turn.done", "error") and e["turn"] == index for e in evs),
        timeout=TURN_TIMEOUT,
    )


def _snapshot(turn: Turn) -> dict[str, Any]:
    """Everything a turn produced, as plain values (for before/after comparisons)."""
    turn.refresh_from_db()
    return {
        "status": turn.status,
        "attempts": turn.attempts,
        "message": turn.message,
        "refined_query": turn.refined_query,
        "prompts": list(turn.prompts),
        "results": list(
            turn.results.order_by("-final", "rank").values_list("item_id", "final", "rank", "score")
        ),
        "previews": list(turn.previews.order_by("index").values_list("index", "prompt", "seed")),
    }


def _assert_complete(turn: Turn, catalog_size: int) -> None:
    """A finished turn with one full, gapless ranking of each kind and all its previews."""
    turn.refresh_from_db()
    assert turn.status == Turn.Status.DONE, (turn.error_code, turn.error)
    expected = list(range(1, min(settings.DAR_RESULTS_K, catalog_size) + 1))
    for final in (False, True):
        ranks = list(
            turn.results.filter(final=final).order_by("rank").values_list("rank", flat=True)
        )
        assert ranks == expected
    assert turn.previews.count() == settings.DAR_PREVIEWS_PER_TURN


# --- A worker killed in the middle of a turn ------------------------------------------------


@pytest.mark.slow
def test_worker_killed_mid_turn_is_rerun_by_another_worker(
    transactional_db: None, offline_models: Any, tmp_path: Path
) -> None:
    gpu_queues = [settings.CELERY_GPU_QUEUE, settings.CELERY_DEFAULT_QUEUE]
    catalog = embedded_catalog(8)
    session = _new_session(catalog=catalog)
    # As deployed: the text stage has a worker of its own, which survives the gpu worker's death.
    interactive = WorkerProcess(
        tmp_path, name="interactive", env=WORKER_ENV, queues=[settings.CELERY_INTERACTIVE_QUEUE]
    )
    with EventRecorder(session.pk) as events:
        first = WorkerProcess(tmp_path, name="doomed", env=WORKER_ENV, queues=gpu_queues)
        try:
            interactive.wait_ready()
            first.wait_ready()
            turn = submit.submit_message(session, MESSAGE)
            # Kill once the provisional results are stored and the gpu attempt runs: the turn is
            # really half done.
            wait_for(
                lambda: (
                    (
                        turn.results.filter(final=False).exists()
                        and Turn.objects.get(pk=turn.pk).status == Turn.Status.RUNNING
                    )
                    or Turn.objects.get(pk=turn.pk).status not in store.ACTIVE
                ),
                timeout=TURN_TIMEOUT,
                what="provisional results and a running gpu attempt",
            )
            first.kill()
        finally:
            first.stop()
        turn.refresh_from_db()
        assert turn.status == Turn.Status.RUNNING, "the turn finished before the kill"
        assert turn.attempts == 1

        # The message was never acknowledged (acks_late): a new worker restores it once it is
        # older than the visibility timeout (shortened here) and reruns the turn from scratch.
        second = WorkerProcess(
            tmp_path,
            name="rescuer",
            visibility_timeout=2,
            env={**WORKER_ENV, "DAR_TURN_MAX_ATTEMPTS": "3"},
            queues=gpu_queues,
        )
        try:
            second.wait_ready()
            _turn_outcome(events)
            wait_for(
                lambda: Turn.objects.get(pk=turn.pk).status not in store.ACTIVE,
                timeout=30,
                what="the turn row to finish",
            )
        finally:
            second.stop()
            interactive.stop()
    assert not events.of("error", 0), events.events
    assert len(events.of("turn.done", 0)) == 1
    # (An event a killed worker had not sent yet dies with it; the rerun's are all there.)
    assert events.of("turn.started", 0)[-1]["attempt"] == 2
    # The rerun removed the dead attempt's output and redid the text stage itself, first.
    assert [e["final"] for e in events.of("results", 0)] == [False, False, True]
    _assert_complete(turn, catalog_size=8)
    turn.refresh_from_db()
    assert turn.attempts == 2
    assert turn.message == MESSAGE and turn.context == [MESSAGE]


@pytest.mark.slow
def test_turn_whose_task_is_lost_past_its_attempts_fails_with_worker_lost(
    transactional_db: None, offline_models: Any, tmp_path: Path, redis_client: Any
) -> None:
    catalog = embedded_catalog(4)
    session = _new_session(catalog=catalog)
    env = {**WORKER_ENV, "DAR_TURN_MAX_ATTEMPTS": "2"}

    def state() -> tuple[str, int]:
        status, attempts = Turn.objects.filter(pk=turn.pk).values_list("status", "attempts").get()
        return str(status), int(attempts)

    def running(attempt: int) -> bool:
        status, attempts = state()
        return attempts >= attempt or status not in store.ACTIVE

    with EventRecorder(session.pk) as events:
        turn = submit.submit_message(session, MESSAGE)
        # Two workers in a row die in the middle of the turn (OOM kill, node lost), each once the
        # turn runs under its attempt; the second restores the unacknowledged message after the
        # (shortened) visibility timeout.
        for attempt in (1, 2):
            doomed = WorkerProcess(
                tmp_path,
                name=f"lost{attempt}",
                env=env,
                visibility_timeout=None if attempt == 1 else 2,
            )
            try:
                doomed.wait_ready()
                wait_for(
                    functools.partial(running, attempt),
                    timeout=TURN_TIMEOUT,
                    what=f"attempt {attempt} to run",
                )
                doomed.kill()
            finally:
                doomed.stop()
            assert state() == (Turn.Status.RUNNING, attempt), "the attempt ended before the kill"

        # The message was never acknowledged; it comes back a third time, and the turn, which
        # had its attempts, fails for good.
        unacked = f"{settings.REDIS_PREFIX}:celery:unacked"
        assert redis_client.hlen(unacked) >= 1
        last = WorkerProcess(tmp_path, name="last", env=env, visibility_timeout=2)
        try:
            last.wait_ready()
            _turn_outcome(events)
            # The failure is the task's result: the message is acknowledged, not redelivered.
            wait_for(lambda: redis_client.hlen(unacked) == 0, timeout=30, what="the ack")
        finally:
            last.stop()
    (error,) = events.of("error", 0)
    assert (error["code"], error["turn"]) == ("worker_lost", 0)
    assert error["message"]
    assert not events.of("turn.done", 0)
    turn.refresh_from_db()
    assert (turn.status, turn.error_code, turn.attempts) == (Turn.Status.FAILED, "worker_lost", 2)
    assert turn.finished_at is not None
    assert turn.message == MESSAGE and turn.context == [MESSAGE]
    # Nothing is left for a sweeper or a page to wait on.
    assert sweep.sweep_stuck_turns(session_id=session.pk) == 0


# --- Redis restarted ------------------------------------------------------------------------


def _layer_host(url: str) -> dict[str, Any]:
    """The product's channel-layer host settings, pointed at another server."""
    layers: Any = settings.CHANNEL_LAYERS
    host = dict(layers["default"]["CONFIG"]["hosts"][0])
    host["address"] = url
    return host


def _web_celery_app(broker: str) -> Celery:
    """A sender like the web process's app, but on the test's own Redis server."""
    sender = Celery("faults-web", set_as_current=False)
    sender.config_from_object("django.conf:settings", namespace="CELERY")
    sender.conf.broker_url = sender.conf.result_backend = broker
    return sender


def _stuck_turn() -> Turn:
    """A turn whose worker vanished long ago: the sweeper task must fail it."""
    session = _new_session()
    long_ago = timezone.now() - timedelta(hours=1)
    turn = Turn.objects.create(
        session=session,
        index=0,
        message=MESSAGE,
        context=[MESSAGE],
        status=Turn.Status.RUNNING,
        attempts=1,
        started_at=long_ago,
    )
    Turn.objects.filter(pk=turn.pk).update(created_at=long_ago)
    return turn


def _eventually(action: Any, timeout: float) -> Any:
    """Retry ``action`` while it raises (a connection being re-established); fail after timeout."""
    failures: list[BaseException] = []

    def attempt() -> Any:
        try:
            return action() or True
        except Exception as exc:  # the first calls after a restart may hit dead connections
            failures.append(exc)
            return None

    try:
        return wait_for(attempt, timeout=timeout, interval=0.5, what=str(action))
    except AssertionError:
        raise AssertionError(f"never recovered; last error: {failures[-1:]!r}") from None


@pytest.mark.slow
def test_redis_restart_web_and_worker_reconnect(transactional_db: None, tmp_path: Path) -> None:
    from dar_site.channel_layer import RedisChannelLayer

    redis_server = RedisServer(tmp_path)
    redis_server.start()
    layer = RedisChannelLayer(
        hosts=[_layer_host(redis_server.url)], prefix=f"{settings.REDIS_PREFIX}:faults"
    )
    sender = _web_celery_app(redis_server.url)
    worker = WorkerProcess(tmp_path, name="survivor", redis_url=redis_server.url)
    # One event loop for the layer all along, as in a web process: its pooled connections are the
    # ones that die with the server and must be replaced.
    loop = asyncio.new_event_loop()

    def channel_roundtrip(tag: str) -> bool:
        async def go() -> bool:
            channel = await layer.new_channel()
            await layer.group_add("faults", channel)
            await layer.group_send("faults", {"type": "search.events", "tag": tag})
            message = await asyncio.wait_for(layer.receive(channel), timeout=5)
            await layer.group_discard("faults", channel)
            return bool(message["tag"] == tag)

        return loop.run_until_complete(go())

    def task_roundtrip() -> None:
        stuck = _stuck_turn()
        sender.send_task("search.sweep_stuck_turns", queue=settings.CELERY_DEFAULT_QUEUE)
        wait_for(
            lambda: Turn.objects.get(pk=stuck.pk).status == Turn.Status.FAILED,
            timeout=60,
            what="the worker to run the sweeper task",
        )
        stuck.refresh_from_db()
        assert stuck.error_code == "timeout"
        assert stuck.message == MESSAGE

    try:
        worker.wait_ready()
        assert channel_roundtrip("before")
        task_roundtrip()

        redis_server.crash()
        redis_server.start()  # same port, empty: every connection and queued message is gone

        assert _eventually(lambda: channel_roundtrip("after"), timeout=30)
        _eventually(task_roundtrip, timeout=90)
        assert worker.proc.poll() is None, worker.log_tail()
    finally:
        worker.stop()
        loop.run_until_complete(layer.flush())
        loop.close()
        sender.close()
        redis_server.stop()


@pytest.mark.slow
async def test_open_page_recovers_after_a_redis_restart(
    transactional_db: None, tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    layers = {
        "default": {
            "BACKEND": settings.CHANNEL_LAYERS["default"]["BACKEND"],
            "CONFIG": {
                "hosts": [_layer_host(redis_server.url)],
                "prefix": f"{settings.REDIS_PREFIX}:page",
            },
        }
    }
    session, key = await _anonymous_session()
    await database_sync_to_async(Turn.objects.create)(
        session=session, index=0, message=MESSAGE, context=[MESSAGE], status=Turn.Status.DONE
    )
    try:
        with override_settings(CHANNEL_LAYERS=layers):
            page = await _open_socket(session.pk, key)
            assert (await _receive(page))["type"] == "state"
            redis_server.crash()
            redis_server.start()
            # The consumer was blocked reading its channel from the dead server: it must end (the
            # ASGI server then closes the socket with 1011 and search.js reconnects), not sit on a
            # socket whose group membership died with Redis.
            assert await _socket_ended(page)
            # The page reconnects with backoff; the first tries may meet pooled connections to
            # the dead server (each fails once, then is replaced). It must get its state back
            # from the database, and live events again.
            page, state = await _reconnect(session.pk, key, tries=5)
            assert state["session"]["turns"][0]["message"] == MESSAGE
            from retrieval.services import events

            async def ping() -> bool:
                await database_sync_to_async(events.emit)(session.pk, {"type": "ping", "turn": 0})
                try:
                    return (await _receive(page, timeout=2))["type"] == "ping"
                except TimeoutError:
                    return False  # emit logs and drops an event a stale connection lost

            assert any([await ping() for _ in range(3)])
            await page.disconnect()
    finally:
        redis_server.stop()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
async def test_idle_page_stays_connected_and_receives_events() -> None:
    # Not a fault, the baseline of the ones above: a page with nothing to receive for longer than
    # the channel layer's blocking pop (5 s) must neither error nor drop.
    session, key = await _anonymous_session()
    page = await _open_socket(session.pk, key)
    assert (await _receive(page))["type"] == "state"
    assert await _app_output(page, timeout=7) is None  # nothing sent, still running
    from retrieval.services import events

    await database_sync_to_async(events.emit)(session.pk, {"type": "ping", "turn": None})
    assert (await _receive(page))["type"] == "ping"
    await page.disconnect()


# --- PostgreSQL connections dropped mid-write -----------------------------------------------


@pytest.mark.slow
def test_db_connection_lost_mid_embedding_batch_is_retried_without_duplicates(
    celery_worker: Any,
) -> None:
    catalog = _new_catalog()
    items = CatalogItemFactory.create_batch(6, catalog=catalog)
    ids = [item.pk for item in items]
    # The connection dies while the batch's vectors are being inserted (after some rows of the
    # same statement went in): the transaction must leave nothing, and the task must retry.
    with backend_killed_on_insert("catalog_itemembedding", f"NEW.item_id = {ids[3]}") as kill:
        result = app.send_task("gpu.embed_items", args=[ids])
        outcome = result.get(timeout=TURN_TIMEOUT)
        assert kill.hits() >= 2  # killed once, then the retry wrote the same row
    assert sorted(outcome["embedded"]) == ids
    assert set(CatalogItem.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        CatalogItem.Status.EMBEDDED
    }
    image_rows = ItemEmbedding.objects.filter(item_id__in=ids, space=ItemEmbedding.Space.IMAGE)
    assert sorted(image_rows.values_list("item_id", flat=True)) == ids


def test_db_connection_lost_mid_import_keeps_every_upload(transactional_db: None) -> None:
    catalog = _new_catalog()
    uploads = [
        sources.from_bytes(f"img{i}.png", png_bytes((40 * i, 20, 200 - 20 * i)), title=f"Mug {i}")
        for i in range(5)
    ]
    victim_sha = validation.sha256_of(png_bytes((80, 20, 160)))  # the third upload's bytes

    # The third item's row insert dies after its file was written.
    with backend_killed_on_insert("catalog_catalogitem", f"NEW.sha256 = '{victim_sha}'") as kill:
        with pytest.raises(OperationalError, match="terminat"):
            ingest.import_candidates(catalog, uploads, embed=False)
        assert kill.hits() == 1
    stored = list(CatalogItem.objects.filter(catalog=catalog).order_by("pk"))
    # Items are inserted in groups (DAR_EMBED_BATCH): what is stored is whole items of the groups
    # committed before the failure (here none: all five are one group), never a partial item.
    titles_before = [item.title for item in stored]
    assert titles_before == [f"Mug {i}" for i in range(len(titles_before))]
    assert "Mug 2" not in titles_before
    assert all(item.image.storage.exists(str(item.image.name)) for item in stored)

    # Re-running the same batch (what the admin does after the error) loses nothing: what was
    # stored is a duplicate, the file left by the killed insert is adopted, the rest are imported.
    report = ingest.import_candidates(catalog, uploads, embed=False)
    done = len(titles_before)
    assert [d["path"] for d in report.duplicates] == [f"img{i}.png" for i in range(done)]
    assert [i["path"] for i in report.imported] == [f"img{i}.png" for i in range(done, 5)]
    assert not report.rejected
    titles = sorted(CatalogItem.objects.filter(catalog=catalog).values_list("title", flat=True))
    assert titles == [f"Mug {i}" for i in range(5)]
    victim_item = CatalogItem.objects.get(catalog=catalog, sha256=victim_sha)
    assert victim_item.image.storage.exists(str(victim_item.image.name))


@pytest.mark.slow
def test_db_connection_lost_while_storing_results_fails_the_turn_cleanly(
    celery_worker: Any, fast_turns: None
) -> None:
    catalog = embedded_catalog(8)
    session = _new_session(catalog=catalog)
    with EventRecorder(session.pk) as events:
        # Dies in the middle of inserting the final ranking, after its first row.
        with backend_killed_on_insert("retrieval_turnresult", "NEW.final AND NEW.rank = 2") as kill:
            turn = submit.submit_message(session, MESSAGE)
            _turn_outcome(events)
            assert kill.hits() == 1
        errors = events.of("error", 0)
        assert [e["code"] for e in errors] == ["internal"], events.events
        assert errors[0]["message"]
        turn.refresh_from_db()
        assert turn.status == Turn.Status.FAILED and turn.error_code == "internal"
        assert turn.message == MESSAGE
        # The provisional ranking is whole; of the final one there is nothing, not one row.
        assert not turn.results.filter(final=True).exists()
        assert turn.results.filter(final=False).count() == 8

        # Nothing the shopper said is lost: the next message carries the whole dialogue.
        follow_up = submit.submit_message(session, "with a white handle")
        _turn_outcome(events, index=1)
    assert follow_up.context == [MESSAGE, "with a white handle"]
    _assert_complete(follow_up, catalog_size=8)


# --- The same task delivered twice ----------------------------------------------------------


def _vectors(ids: list[int]) -> dict[tuple[int, str], tuple[int, np.ndarray]]:
    rows = ItemEmbedding.objects.filter(item_id__in=ids).values_list(
        "item_id", "space", "pk", "vector"
    )
    return {(item, space): (pk, np.asarray(vec)) for item, space, pk, vec in rows}


@pytest.mark.slow
def test_embedding_task_delivered_twice_changes_nothing(celery_worker: Any) -> None:
    catalog = _new_catalog()
    ids = [item.pk for item in CatalogItemFactory.create_batch(4, catalog=catalog)]
    app.send_task("gpu.embed_items", args=[ids]).get(timeout=TURN_TIMEOUT)
    before = _vectors(ids)
    assert {item for item, _ in before} == set(ids)

    # Two more deliveries at once, like a redelivery racing the original.
    again = [app.send_task("gpu.embed_items", args=[ids]) for _ in range(2)]
    for result in again:
        result.get(timeout=TURN_TIMEOUT)
    after = _vectors(ids)
    assert after.keys() == before.keys()
    for key, (pk, vector) in before.items():
        assert after[key][0] == pk  # upserted in place, never a second row
        np.testing.assert_allclose(after[key][1], vector, atol=1e-5)
    assert ItemEmbedding.objects.filter(item_id__in=ids).count() == len(before)
    assert set(CatalogItem.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        CatalogItem.Status.EMBEDDED
    }


def _workers_idle() -> bool:
    """Whether the in-process workers of this test have no task running or waiting."""
    from celery.worker import state

    return not state.active_requests and not state.reserved_requests


@pytest.mark.slow
def test_turn_task_delivered_twice_is_idempotent(celery_worker: Any, fast_turns: None) -> None:
    catalog = embedded_catalog(8)
    session = _new_session(catalog=catalog)
    with EventRecorder(session.pk) as events:
        turn = submit.submit_message(session, MESSAGE)
        _turn_outcome(events)
        before = _snapshot(turn)
        # A late redelivery of a finished turn is a no-op.
        for result in [app.send_task(tasks.RUN_TURN_TASK, args=[turn.pk]) for _ in range(2)]:
            result.get(timeout=TURN_TIMEOUT)
        assert _snapshot(turn) == before

        # A duplicate racing the original: one of them takes the turn over, the other stops.
        racing = submit.submit_message(session, "with a white handle")
        duplicate = app.send_task(tasks.RUN_TURN_TASK, args=[racing.pk])
        _turn_outcome(events, index=1)
        duplicate.get(timeout=TURN_TIMEOUT)
        # The original delivery stores no result (the turn's row is its outcome): wait until the
        # workers have nothing left to run, so a late write or event would be seen below.
        wait_for(_workers_idle, timeout=TURN_TIMEOUT, what="the workers to finish every task")
    _assert_complete(racing, catalog_size=8)
    assert len(events.of("turn.done", 1)) == 1
    assert not events.of("error", 1)
    assert _snapshot(turn) == before
    assert list(Turn.objects.filter(session=session).values_list("message", flat=True)) == [
        MESSAGE,
        "with a white handle",
    ]
    assert TurnResult.objects.filter(turn__session=session).count() == 4 * 8


# --- Bursts ---------------------------------------------------------------------------------


@database_sync_to_async
def _anonymous_session(**fields: Any) -> tuple[SearchSession, str]:
    key = browser_session_key()
    return _new_session(session_key=key, **fields), key


async def _open_socket(
    session_id: object, cookie_key: str, address: str = "127.0.0.1"
) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost"), (b"cookie", f"sessionid={cookie_key}".encode())]
    comm = WebsocketCommunicator(application, f"/ws/search/{session_id}/", headers=headers)
    comm.scope["client"] = (address, 40000)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    return comm


async def _receive(comm: WebsocketCommunicator, timeout: float = 10) -> dict[str, Any]:
    return dict(json.loads(await comm.receive_from(timeout=timeout)))


async def _reconnect(
    session_id: object, cookie_key: str, tries: int
) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    """Open the page's socket until it delivers the restored state, as search.js retries."""
    import redis

    for _ in range(tries):
        page = await _open_socket(session_id, cookie_key)
        try:
            output = await _app_output(page)
        except (redis.ConnectionError, redis.TimeoutError):
            continue  # the consumer failed; the server would close the socket with 1011
        if output is None or output["type"] == "websocket.close":
            # A join that met a stale pooled connection: closed (1011) or still waiting; the
            # page retries, as search.js does when its socket closes. A consumer still waiting
            # may fail on that connection while being disconnected: the same outcome.
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                await page.disconnect()
            continue
        assert output["type"] == "websocket.send", output
        state = json.loads(output["text"])
        assert state["type"] == "state"
        return page, state
    raise AssertionError(f"the page did not recover in {tries} reconnects")


async def _app_output(comm: WebsocketCommunicator, timeout: float = 10) -> dict[str, Any] | None:
    """The consumer's next ASGI message; raises what the consumer raised if it died first, and
    returns None if it neither sent nor ended within ``timeout`` (the communicator itself only
    notices a dead application when its own timeout expires)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if not comm.output_queue.empty():
            return dict(comm.output_queue.get_nowait())
        if comm.future.done():
            comm.future.result()  # raises the consumer's exception
            return {"type": "application.exit"}
        await asyncio.sleep(0.02)
    return None


async def _socket_ended(comm: WebsocketCommunicator) -> bool:
    import redis

    try:
        output = await _app_output(comm)
    except (redis.ConnectionError, ConnectionError):
        return True  # the consumer raised: the ASGI server closes the socket (1011)
    # None: still open and silent, the page would wait forever for events.
    return output is not None and output["type"] in ("websocket.close", "application.exit")


async def _burst(comm: WebsocketCommunicator, texts: list[str]) -> list[dict[str, Any]]:
    """Send every message without waiting, then collect one answer per message."""
    for text in texts:
        await comm.send_json_to({"type": "message", "text": text})
    answers: list[dict[str, Any]] = []
    while len(answers) < len(texts):
        event = await _receive(comm)
        if event["type"] in ("turn.accepted", "error"):
            answers.append(event)
    return answers


@pytest.mark.django_db(transaction=True)
async def test_burst_from_one_session_and_one_address_is_rate_limited(redis_client: Any) -> None:
    # Address counters outlive a test (they last the whole window): start from none.
    for stale in redis_client.scan_iter(f"{settings.REDIS_PREFIX}:ratelimit:*"):
        redis_client.delete(stale)
    address = "198.51.100.7"
    first, first_key = await _anonymous_session()
    second, second_key = await _anonymous_session()
    with override_settings(DAR_RATE_LIMIT_TURNS=3, DAR_RATE_LIMIT_ADDRESS_TURNS=5):
        page = await _open_socket(first.pk, first_key, address)
        await _receive(page)  # state
        texts = [f"message {i}" for i in range(6)]
        answers = await _burst(page, texts)
        accepted = [a["message"] for a in answers if a["type"] == "turn.accepted"]
        refused = [a for a in answers if a["type"] == "error"]
        assert accepted == texts[:3]
        assert {a["code"] for a in refused} == {"rate_limited"} and len(refused) == 3
        assert all("at most 3" in a["message"] for a in refused)
        await page.disconnect()

        # Another session from the same address runs into the address limit (3 + 2 = 5).
        other = await _open_socket(second.pk, second_key, address)
        await _receive(other)
        answers = await _burst(other, ["a", "b", "c"])
        assert [a["type"] for a in answers].count("turn.accepted") == 2
        assert [a.get("code") for a in answers if a["type"] == "error"] == ["rate_limited"]
        await other.disconnect()

    @database_sync_to_async
    def stored(session: SearchSession) -> list[str]:
        return list(
            Turn.objects.filter(session=session).order_by("index").values_list("message", flat=True)
        )

    # Every accepted message is stored, in order; every refused one was answered with an error.
    assert await stored(first) == texts[:3]
    assert await stored(second) == ["a", "b"]
