"""The search websocket through the full ASGI stack (origin check, cookies, sessions, auth)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import override_settings

from dar_site.asgi import application
from retrieval.models import Feedback, Turn
from tests.factories import (
    CatalogItemFactory,
    SearchSessionFactory,
    TurnFactory,
    TurnResultFactory,
    UserFactory,
    browser_session_key,
    embedded_catalog,
    limit_llm_tokens,
)

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = b"http://localhost"
TIMEOUT = 10


@pytest.fixture(autouse=True)
def _fresh_rate_limits(redis_client: Any) -> None:
    # Counters are per address too, and every test talks from the same one.
    for key in redis_client.scan_iter(f"{settings.REDIS_PREFIX}:ratelimit:*"):
        redis_client.delete(key)


async def open_socket(
    session_id: object, cookie_key: str | None, origin: bytes = ORIGIN
) -> tuple[WebsocketCommunicator, bool]:
    headers = [(b"origin", origin)]
    if cookie_key:
        headers.append((b"cookie", f"sessionid={cookie_key}".encode()))
    comm = WebsocketCommunicator(application, f"/ws/search/{session_id}/", headers=headers)
    connected, _ = await comm.connect(timeout=TIMEOUT)
    return comm, connected


@sync_to_async
def anonymous_session(**fields: Any) -> tuple[Any, str]:
    key = browser_session_key()
    return SearchSessionFactory.create(session_key=key, **fields), key


def _turn_contexts(session: Any) -> list[tuple[int, list[str]]]:
    return list(
        Turn.objects.filter(session=session).order_by("index").values_list("index", "context")
    )


async def receive(comm: WebsocketCommunicator, timeout: float = TIMEOUT) -> dict[str, Any]:
    return json.loads(await comm.receive_from(timeout=timeout))


async def test_connect_restores_the_session_from_the_database() -> None:
    session, key = await anonymous_session()

    @sync_to_async
    def history() -> Turn:
        turn = TurnFactory.create(
            session=session,
            index=0,
            status=Turn.Status.DONE,
            refined_query="a red shoe",
            question="Which size?",
        )
        for rank in (1, 2):
            TurnResultFactory.create(turn=turn, final=True, rank=rank, score=1.0 / rank)
        return turn

    turn = await history()
    comm, connected = await open_socket(session.pk, key)
    assert connected
    state = await receive(comm)
    assert state["type"] == "state"
    (restored,) = state["session"]["turns"]
    assert restored["index"] == turn.index and restored["refined_query"] == "a red shoe"
    assert restored["final"] is True and [r["rank"] for r in restored["results"]] == [1, 2]
    assert all(r["image"].startswith(settings.MEDIA_URL) for r in restored["results"])
    # "restore" asks for the same state again (the page does it after a reconnect).
    await comm.send_json_to({"type": "restore"})
    assert (await receive(comm))["session"]["turns"][0]["question"] == "Which size?"
    await comm.disconnect()


async def test_someone_elses_session_is_refused_with_4403() -> None:
    owner = await sync_to_async(UserFactory.create)()
    session = await sync_to_async(SearchSessionFactory.create)(user=owner, session_key="")
    intruder = await sync_to_async(UserFactory.create)()
    for cookie in (
        await sync_to_async(browser_session_key)(),
        await sync_to_async(browser_session_key)(intruder),
        None,
    ):
        comm, connected = await open_socket(session.pk, cookie)
        assert connected  # accepted only to say why, then closed
        error = await receive(comm)
        assert (error["type"], error["code"]) == ("error", "forbidden")
        assert await comm.receive_output(timeout=TIMEOUT) == {
            "type": "websocket.close",
            "code": 4403,
        }
    # The owner, signed in, gets in.
    comm, _ = await open_socket(session.pk, await sync_to_async(browser_session_key)(owner))
    assert (await receive(comm))["type"] == "state"
    await comm.disconnect()


async def test_unknown_session_closes_with_4404_and_foreign_origin_is_rejected() -> None:
    key = await sync_to_async(browser_session_key)()
    for bad_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        comm, _ = await open_socket(bad_id, key)
        assert (await receive(comm))["code"] == "not_found"
        assert (await comm.receive_output(timeout=TIMEOUT))["code"] == 4404
    session, key = await anonymous_session()
    comm, connected = await open_socket(session.pk, key, origin=b"https://evil.example")
    assert not connected


async def test_bad_input_gets_an_error_and_the_socket_stays_usable() -> None:
    session, key = await anonymous_session()
    foreign_item = await sync_to_async(CatalogItemFactory.create)()
    own_item = await sync_to_async(CatalogItemFactory.create)(catalog=session.catalog)
    comm, _ = await open_socket(session.pk, key)
    assert (await receive(comm))["type"] == "state"

    bad_frames: list[tuple[str, str]] = [
        ("this is not json", "bad_json"),
        ("[1, 2, 3]", "bad_json"),
        (json.dumps({"type": "dance"}), "unknown_type"),
        (json.dumps({"text": "no type"}), "unknown_type"),
        (json.dumps({"type": "message", "text": "   "}), "empty_message"),
        (json.dumps({"type": "message", "text": 42}), "empty_message"),
        (json.dumps({"type": "message", "text": "x" * 21}), "message_too_long"),
        (json.dumps({"type": "feedback", "item": foreign_item.pk, "value": 1}), "bad_feedback"),
        (json.dumps({"type": "feedback", "item": "shoe", "value": 1}), "bad_feedback"),
        (json.dumps({"type": "feedback", "item": own_item.pk, "value": 5}), "bad_feedback"),
    ]
    with override_settings(DAR_MAX_MESSAGE_CHARS=20):
        for frame, code in bad_frames:
            await comm.send_to(text_data=frame)
            error = await receive(comm)
            assert (error["type"], error["code"]) == ("error", code), frame
            assert error["message"]
    assert await sync_to_async(Turn.objects.filter(session=session).count)() == 0

    # Still open and working: a valid feedback is stored and echoed to the session's sockets.
    await comm.send_json_to({"type": "feedback", "item": own_item.pk, "value": -1})
    echoed = await receive(comm)
    assert (echoed["type"], echoed["item"], echoed["value"]) == ("feedback", own_item.pk, -1)
    stored = await sync_to_async(Feedback.objects.get)(session=session, item=own_item)
    assert stored.value == -1
    await comm.send_json_to({"type": "feedback", "item": own_item.pk, "value": 0})
    assert (await receive(comm))["value"] == 0
    assert not await sync_to_async(Feedback.objects.filter(session=session).exists)()
    await comm.disconnect()


async def test_rate_limit_and_turn_limit_refuse_clearly() -> None:
    session, key = await anonymous_session()
    comm, _ = await open_socket(session.pk, key)
    await receive(comm)
    with override_settings(DAR_RATE_LIMIT_TURNS=2):
        for text in ("a blue jacket", "with a hood"):
            await comm.send_json_to({"type": "message", "text": text})
            accepted = await receive(comm)
            assert (accepted["type"], accepted["message"]) == ("turn.accepted", text)
        await comm.send_json_to({"type": "message", "text": "and pockets"})
        refused = await receive(comm)
        assert (refused["type"], refused["code"]) == ("error", "rate_limited")
    turns = await sync_to_async(_turn_contexts)(session)
    assert turns == [(0, ["a blue jacket"]), (1, ["a blue jacket", "with a hood"])]

    with override_settings(DAR_MAX_TURNS_PER_SESSION=2):
        await comm.send_json_to({"type": "message", "text": "one more"})
        assert (await receive(comm))["code"] == "too_many_turns"
    await comm.disconnect()


@pytest.mark.slow
async def test_messages_stream_every_stage_in_order(
    celery_worker: Any, monkeypatch: Any, settings: Any
) -> None:
    limit_llm_tokens(monkeypatch)
    settings.DAR_TURN_TIME_LIMIT = 900
    catalog = await sync_to_async(embedded_catalog)(8)
    session, key = await anonymous_session(catalog=catalog)
    comm, _ = await open_socket(session.pk, key)
    await receive(comm)
    # The second message arrives while the first turn runs: it is queued behind it.
    await comm.send_json_to({"type": "message", "text": "a small red ceramic mug"})
    await comm.send_json_to({"type": "message", "text": "with a white handle"})

    events: list[dict[str, Any]] = []
    while sum(e["type"] in ("turn.done", "error") for e in events) < 2:
        events.append(await receive(comm, timeout=240))
    assert not [e for e in events if e["type"] == "error"], events

    for index in (0, 1):
        kinds = [(e["type"], e.get("final")) for e in events if e["turn"] == index]
        kinds = [k for k in kinds if k[0] != "question"]
        assert kinds[0] == ("turn.accepted", None) and kinds[-1] == ("turn.done", None)
        # The text stage (interactive worker) and the gpu task start together, so their first
        # events may come in either order; the text-only results always precede the final ones.
        stages = [
            ("turn.started", None),
            ("results", False),
            ("query.refined", None),
            ("previews", None),
            ("results", True),
        ]
        assert sorted(kinds[1:-1], key=str) == sorted(stages, key=str)
        at = {kind: kinds.index(kind) for kind in stages}
        assert at[("results", False)] < at[("results", True)]
        assert (
            at[("turn.started", None)]
            < at[("query.refined", None)]
            < at[("previews", None)]
            < at[("results", True)]
        )
    # Strict order: nothing of turn 1 starts before turn 0 is done.
    positions = {(e["type"], e["turn"]): i for i, e in enumerate(events)}
    assert positions[("turn.done", 0)] < positions[("turn.started", 1)]

    final = [e for e in events if e["type"] == "results" and e["final"]]
    for event in final:
        assert [item["rank"] for item in event["items"]] == list(range(1, 9))
        assert {"id", "title", "image", "score", "rank"} <= set(event["items"][0])
        scores = [item["score"] for item in event["items"]]
        assert scores == sorted(scores, reverse=True)
    previews = [e for e in events if e["type"] == "previews"]
    assert all(len(e["images"]) == settings.DAR_PREVIEWS_PER_TURN for e in previews)
    refined = [e for e in events if e["type"] == "query.refined"]
    assert all(e["description"] and isinstance(e["fallback"], bool) for e in refined)
    done = [e for e in events if e["type"] == "turn.done"]
    assert all({"text", "refine", "generate", "rank", "total"} <= set(e["timings"]) for e in done)
    await comm.disconnect()
