"""Turns under load: consumers' database work in parallel, a bounded line with each waiting turn
told its place, refusal beyond capacity (websocket and REST) that loses nothing, and the notice of
a turn that ran out of time.

Through the full ASGI stack (``WebsocketCommunicator``) on the real PostgreSQL and Redis. No worker
runs: turns stay queued, which is exactly the line these tests need.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from dar_site.asgi import application
from retrieval.models import SearchSession, Turn
from retrieval.turn import admission, submit
from retrieval.turn.sweep import SWEEP_GRACE
from tests.browser import (
    AXE_BROWSER_MARKS,
    axe_violations,
    chromium,
    live_server,
    off_loop,
    open_stored_search,
)
from tests.factories import (
    CatalogFactory,
    SearchSessionFactory,
    TurnFactory,
    TurnResultFactory,
    browser_session_key,
)

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = b"http://localhost"
TIMEOUT = 10


@pytest.fixture(autouse=True)
def _fresh_counters(redis_client: Any) -> None:
    for key in redis_client.scan_iter(f"{settings.REDIS_PREFIX}:ratelimit:*"):
        redis_client.delete(key)
    # Each test builds its own line: no estimate of the line's speed from an earlier test.
    admission._estimate.clear()


async def open_socket(session_id: object, cookie_key: str) -> WebsocketCommunicator:
    headers = [(b"origin", ORIGIN), (b"cookie", f"sessionid={cookie_key}".encode())]
    comm = WebsocketCommunicator(application, f"/ws/search/{session_id}/", headers=headers)
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    return comm


async def receive(comm: WebsocketCommunicator) -> dict[str, Any]:
    return json.loads(await comm.receive_from(timeout=TIMEOUT))


@sync_to_async
def anonymous_session(**fields: Any) -> tuple[SearchSession, str]:
    key = browser_session_key()
    return SearchSessionFactory.create(session_key=key, **fields), key


def other_shoppers_turns(
    queued: int, *, running: int = 0, done_runs_s: tuple[float, ...] = ()
) -> None:
    """Other sessions' turns: ``queued`` waiting in line (oldest first), ``running`` ones, and
    finished ones that ran for ``done_runs_s`` seconds (what the expected wait is estimated
    from)."""
    now = timezone.now()
    for i in range(queued):
        turn = TurnFactory.create(index=0, status=Turn.Status.QUEUED)
        # created_at is set on insert; the line's order is by it.
        Turn.objects.filter(pk=turn.pk).update(created_at=now - timedelta(seconds=queued - i))
    for _ in range(running):
        TurnFactory.create(index=0, status=Turn.Status.RUNNING, started_at=now)
    for seconds in done_runs_s:
        TurnFactory.create(
            index=0,
            status=Turn.Status.DONE,
            started_at=now - timedelta(seconds=seconds),
            finished_at=now,
        )


def session_turns(session: SearchSession) -> list[tuple[int, str, str]]:
    return list(
        Turn.objects.filter(session=session)
        .order_by("index")
        .values_list("index", "message", "status")
    )


async def test_consumers_database_calls_run_side_by_side(monkeypatch: Any) -> None:
    """Two shoppers' messages are stored at the same time: each call waits at a barrier that
    only opens once both are inside a database call. On one shared thread (asgiref's
    thread-sensitive executor) the second could never start, and the barrier would break."""
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    threads: list[str] = []
    real_submit = submit.submit_message

    def slow_submit(session: SearchSession, text: Any, **kwargs: Any) -> Turn:
        # A real query on this thread's connection, then wait for the other consumer's call.
        assert SearchSession.objects.filter(pk=session.pk).exists()
        threads.append(threading.current_thread().name)
        barrier.wait()
        return real_submit(session, text, **kwargs)

    monkeypatch.setattr(submit, "submit_message", slow_submit)
    sockets = []
    for text in ("a red mug", "a blue lamp"):
        session, key = await anonymous_session()
        comm = await open_socket(session.pk, key)
        assert (await receive(comm))["type"] == "state"
        sockets.append((comm, text))
    for comm, text in sockets:
        await comm.send_json_to({"type": "message", "text": text})
    for comm, text in sockets:
        accepted = await receive(comm)
        assert (accepted["type"], accepted["message"]) == ("turn.accepted", text), accepted
        await comm.disconnect()
    assert not barrier.broken
    assert len(set(threads)) == 2 and all(name.startswith("dar-ws-db") for name in threads)


async def test_a_turn_behind_other_shoppers_is_told_its_place_and_wait(settings: Any) -> None:
    settings.DAR_TURN_QUEUE_DEPTH = 10
    # Two turns wait ahead; one runs; recent turns ran 6 s: one starts about every 6 s.
    await sync_to_async(other_shoppers_turns)(2, running=1, done_runs_s=(4.0, 8.0))
    session, key = await anonymous_session()
    comm = await open_socket(session.pk, key)
    await receive(comm)

    await comm.send_json_to({"type": "message", "text": "a green jacket"})
    accepted = await receive(comm)
    assert (accepted["type"], accepted["turn"]) == ("turn.accepted", 0)
    queued = await receive(comm)
    assert queued == {"type": "turn.queued", "turn": 0, "position": 3, "expected_wait_s": 18}

    # The page that reconnects (or restores) sees the same place in its state.
    await comm.send_json_to({"type": "restore"})
    state = await receive(comm)
    (turn,) = state["session"]["turns"]
    assert turn["status"] == "queued"
    assert turn["queue"] == {"position": 3, "expected_wait_s": 18}
    await comm.disconnect()


async def test_a_turn_behind_only_its_own_session_gets_no_line_notice() -> None:
    session, key = await anonymous_session()
    comm = await open_socket(session.pk, key)
    await receive(comm)
    for text in ("a red mug", "with a handle"):
        await comm.send_json_to({"type": "message", "text": text})
        assert (await receive(comm))["type"] == "turn.accepted"
    # No turn.queued came (the next frame is the state): the second turn waits only for the
    # first, which the page shows.
    await comm.send_json_to({"type": "restore"})
    state = await receive(comm)
    assert state["type"] == "state"
    assert [t["queue"] for t in state["session"]["turns"]] == [None, None]
    await comm.disconnect()


async def test_beyond_the_queue_depth_a_message_is_refused_and_nothing_is_lost(
    settings: Any,
) -> None:
    settings.DAR_TURN_QUEUE_DEPTH = 2
    await sync_to_async(other_shoppers_turns)(2, running=1, done_runs_s=(5.0,))
    session, key = await anonymous_session()
    comm = await open_socket(session.pk, key)
    await receive(comm)

    await comm.send_json_to({"type": "message", "text": "a yellow hat"})
    refused = await receive(comm)
    assert (refused["type"], refused["turn"], refused["code"]) == ("error", None, "busy")
    assert refused["retry_after_s"] == 5
    assert "send your message again" in refused["message"]
    # Nothing stored, and the socket stays usable.
    assert await sync_to_async(session_turns)(session) == []
    await comm.send_json_to({"type": "restore"})
    assert (await receive(comm))["type"] == "state"

    # Once the line moves, the same message is accepted: the refusal cost the shopper nothing,
    # not even a place in the rate limit.
    settings.DAR_RATE_LIMIT_TURNS = 1
    await sync_to_async(
        lambda: Turn.objects.filter(status=Turn.Status.QUEUED).update(status=Turn.Status.RUNNING)
    )()
    await comm.send_json_to({"type": "message", "text": "a yellow hat"})
    assert (await receive(comm))["type"] == "turn.accepted"
    assert await sync_to_async(session_turns)(session) == [(0, "a yellow hat", "queued")]
    await comm.disconnect()


def test_the_rest_api_refuses_beyond_the_queue_depth_with_503_and_retry_after(
    settings: Any,
) -> None:
    settings.DAR_TURN_QUEUE_DEPTH = 1
    other_shoppers_turns(1)  # no finished turn yet: the default Retry-After
    client = APIClient()
    client.credentials(HTTP_X_CSRFTOKEN=client.get("/api/csrf/").json()["csrfToken"])
    catalog = CatalogFactory.create()
    session_id = client.post("/api/search/sessions/", {"catalog": catalog.slug}, format="json")
    url = f"/api/search/sessions/{session_id.json()['id']}/messages/"

    refused = client.post(url, {"text": "a grey vase"}, format="json")
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "15"
    assert refused.json()["code"] == "busy" and refused.json()["retry_after_s"] == 15
    session = SearchSession.objects.get(pk=uuid.UUID(session_id.json()["id"]))
    assert session_turns(session) == []

    Turn.objects.filter(status=Turn.Status.QUEUED).update(status=Turn.Status.DONE)
    accepted = client.post(url, {"text": "a grey vase"}, format="json")
    assert accepted.status_code == 202, accepted.content
    assert accepted.json()["queue"] is None  # nobody else waits: no place to tell


def test_a_rate_limited_message_says_when_to_retry(settings: Any) -> None:
    settings.DAR_RATE_LIMIT_TURNS = 1
    client = APIClient()
    client.credentials(HTTP_X_CSRFTOKEN=client.get("/api/csrf/").json()["csrfToken"])
    catalog = CatalogFactory.create()
    session_id = client.post("/api/search/sessions/", {"catalog": catalog.slug}, format="json")
    url = f"/api/search/sessions/{session_id.json()['id']}/messages/"
    assert client.post(url, {"text": "a red mug"}, format="json").status_code == 202
    limited = client.post(url, {"text": "a blue mug"}, format="json")
    assert limited.status_code == 429
    retry = int(limited.headers["Retry-After"])
    assert 1 <= retry <= settings.DAR_RATE_LIMIT_WINDOW
    assert limited.json()["retry_after_s"] == retry


async def test_a_turn_that_waited_past_its_time_limit_tells_the_shopper() -> None:
    session, key = await anonymous_session()

    @sync_to_async
    def stale_turn() -> None:
        turn = TurnFactory.create(session=session, index=0, status=Turn.Status.QUEUED)
        TurnResultFactory.create(turn=turn, final=False, rank=1)
        waited = settings.DAR_TURN_TIME_LIMIT + SWEEP_GRACE + 5
        Turn.objects.filter(pk=turn.pk).update(
            created_at=timezone.now() - timedelta(seconds=waited)
        )

    await stale_turn()
    comm = await open_socket(session.pk, key)
    # The page's connect (or restore) finds it past its limit: an event says so, and so does the
    # state (the event comes through the session's group, so either may arrive first).
    frames = {frame["type"]: frame for frame in [await receive(comm), await receive(comm)]}
    notice, state = frames["error"], frames["state"]
    assert (notice["turn"], notice["code"]) == (0, "timeout")
    assert "waited too long in line" in notice["message"]
    assert "send it again" in notice["message"]
    (turn,) = state["session"]["turns"]
    assert turn["status"] == "failed" and turn["error"]["code"] == "timeout"
    assert turn["error"]["message"] == notice["message"]
    assert turn["queue"] is None
    # The text-only results it got are kept.
    assert len(turn["results"]) == 1 and turn["final"] is False
    await comm.disconnect()


def _with_marks(test: Any) -> Any:
    for mark in AXE_BROWSER_MARKS:
        test = mark(test)
    return test


@_with_marks
def test_the_page_shows_the_line_and_gives_a_refused_message_back(settings: Any) -> None:
    settings.DAR_TURN_QUEUE_DEPTH = 1
    off_loop(lambda: other_shoppers_turns(1, running=1, done_runs_s=(7.0,)))
    with chromium() as browser, live_server() as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        session_id = open_stored_search(page, server)

        # The line is full: the message is refused, and the shopper gets the text back.
        page.fill("#message", "a green scarf")
        page.press("#message", "Enter")
        error = page.locator("#composer-error")
        error.wait_for(state="visible")
        assert "send your message again" in error.inner_text()
        assert page.locator("#message").input_value() == "a green scarf"
        assert page.locator("#send").is_enabled()
        session = uuid.UUID(session_id)
        assert off_loop(lambda: Turn.objects.filter(session_id=session).count()) == 1

        # Room in the line again: accepted, and the page says where it waits, for how long.
        settings.DAR_TURN_QUEUE_DEPTH = 5
        page.press("#message", "Enter")
        status = page.locator("#composer-status")
        page.wait_for_function(
            "() => document.getElementById('composer-status').textContent.includes('position 2')"
        )
        assert "about 14 s" in status.inner_text()
        assert status.get_attribute("role") == "status"
        assert page.locator("#message").input_value() == ""
        assert axe_violations(page) == []

        # A reload restores the same place from the state.
        page.reload()
        page.wait_for_function(
            "() => document.getElementById('composer-status').textContent.includes('position 2')"
        )
        assert page.locator("#send").is_disabled()
