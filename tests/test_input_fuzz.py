"""Any input gets a clear error: every REST body and websocket frame, fuzzed with Hypothesis.

Found by hand first (issue 16): ``"²"`` as a feedback item or a session's catalog (a 500: "²" is
a digit to ``str.isdigit`` but not to ``int``), a NUL in a message (PostgreSQL's DataError; the
websocket consumer died with 1006) and a lone surrogate (a 500). Those cases are pinned below; the
property tests then throw arbitrary JSON (and non-JSON) at every body and frame type.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from dar_site.asgi import application
from dar_site.input_ids import row_id
from retrieval.models import SearchSession, Turn
from tests.factories import (
    CatalogFactory,
    CatalogItemFactory,
    SearchSessionFactory,
    browser_session_key,
    embedded_catalog,
    limit_llm_tokens,
    png_bytes,
    shop_admin,
)

pytestmark = pytest.mark.django_db(transaction=True)
T = TypeVar("T")

FUZZ = hypothesis_settings(
    max_examples=50,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure is reproducible, CI stays steady
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Any character, lone surrogates and NUL included (Hypothesis leaves surrogates out by default).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
NASTY_TEXT = st.sampled_from(["²", "\x00", "\ud800", "a\x00b", "٣", "9" * 5000, " 1 "]) | ANY_TEXT
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | NASTY_TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=8,
)


def bodies(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """Bodies of one endpoint: its fields with fuzzed values, any JSON at all, or raw bytes."""
    objects = st.fixed_dictionaries(
        {}, optional={name: strategy | JSON_VALUES for name, strategy in fields.items()}
    )
    as_json = (objects | JSON_VALUES).map(lambda value: json.dumps(value).encode())
    return as_json | st.binary(max_size=64)


@pytest.fixture(autouse=True)
def _fresh_rate_limits(redis_client: Any) -> None:
    for key in redis_client.scan_iter(f"{settings.REDIS_PREFIX}:ratelimit:*"):
        redis_client.delete(key)


def assert_clear_answer(response: Any, ok: tuple[int, ...]) -> None:
    """A success the endpoint documents, or a 4xx whose JSON body says what was wrong."""
    assert response.status_code < 500, response.content[:300]
    if response.status_code not in ok:
        assert 400 <= response.status_code < 500, response.content[:300]
        body = response.json()
        assert body and isinstance(body, dict), body


def shopper_with_session(catalog_slug: str) -> tuple[APIClient, str]:
    client = APIClient(raise_request_exception=False)
    response = client.post("/api/search/sessions/", {"catalog": catalog_slug}, format="json")
    assert response.status_code == 201, response.content
    return client, str(response.json()["id"])


# --- row ids: one rule for every endpoint and frame ------------------------------------------


@hypothesis_settings(max_examples=200, derandomize=True)
@given(value=JSON_VALUES | st.integers() | st.text())
def test_row_id_is_a_bigint_or_nothing(value: Any) -> None:
    parsed = row_id(value)
    assert parsed is None or (type(parsed) is int and 0 < parsed < 2**63)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7, 7),
        ("7", 7),
        (" 42 ", 42),
        ("²", None),
        ("٣", None),
        (True, None),
        (0, None),
        (-3, None),
        (2**63, None),
        ("9" * 19, None),
        (str(2**63 - 1), 2**63 - 1),
        (1.0, None),
    ],
)
def test_row_id_cases(value: Any, expected: int | None) -> None:
    assert row_id(value) == expected


# --- the cases found by hand ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("sessions", {"catalog": "²"}),
        ("sessions", {"catalog": "a\x00b"}),
        ("sessions", {"catalog": "\ud800"}),
        ("sessions", {"catalog": "9" * 5000}),
        ("feedback", {"item": "²", "value": 1}),
        ("feedback", {"item": "9" * 5000, "value": 1}),
        ("feedback", {"item": 2**70, "value": 1}),
        ("clicks", {"item": "²"}),
        ("clicks", {"item": "9" * 19}),
        ("clicks", {"item": 2**70}),
        ("messages", {"text": "a red\x00 dress"}),
        ("messages", {"text": "a red \ud800 dress"}),
    ],
)
def test_inputs_that_crashed_get_a_clear_400(
    endpoint: str, body: dict[str, Any], no_task_queue: list[Any]
) -> None:
    catalog = CatalogFactory.create()
    CatalogItemFactory.create(catalog=catalog)
    client, session_id = shopper_with_session(catalog.slug)
    path = {
        "sessions": "/api/search/sessions/",
        "feedback": f"/api/search/sessions/{session_id}/feedback/",
        "clicks": f"/api/search/sessions/{session_id}/clicks/",
        "messages": f"/api/search/sessions/{session_id}/messages/",
    }[endpoint]
    response = client.post(path, json.dumps(body), content_type="application/json")
    assert response.status_code in (400, 404), response.content[:300]
    answer = response.json()
    assert answer.get("message") or answer.get("detail"), answer
    assert SearchSession.objects.count() == 1 and not Turn.objects.exists()


# --- REST bodies ----------------------------------------------------------------------------


def test_search_rest_bodies_always_get_a_clear_answer(no_task_queue: list[Any]) -> None:
    catalog = CatalogFactory.create()
    item = CatalogItemFactory.create(catalog=catalog)
    client, session_id = shopper_with_session(catalog.slug)
    ids = st.sampled_from([item.pk, str(item.pk), catalog.pk]) | JSON_VALUES
    endpoints = {
        "/api/search/sessions/": (
            bodies({"catalog": st.sampled_from([catalog.slug, str(catalog.pk)])}),
            (201,),
        ),
        f"/api/search/sessions/{session_id}/messages/": (
            bodies({"text": st.sampled_from(["a red dress", "  hat  "]) | NASTY_TEXT}),
            (202,),
        ),
        f"/api/search/sessions/{session_id}/feedback/": (
            bodies({"item": ids, "value": st.sampled_from([1, -1, 0, True, "1"])}),
            (200,),
        ),
        f"/api/search/sessions/{session_id}/clicks/": (
            bodies({"item": ids, "source": st.sampled_from(["page", "widget"]) | JSON_VALUES}),
            (201,),
        ),
    }

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(endpoints)))
        strategy, ok = endpoints[path]
        body = data.draw(strategy)
        content_type = data.draw(
            st.sampled_from(["application/json", "application/x-www-form-urlencoded"])
        )
        with override_settings(DAR_MAX_TURNS_PER_SESSION=10_000, DAR_RATE_LIMIT_TURNS=10_000):
            response = client.post(path, body, content_type=content_type)
        assert_clear_answer(response, ok)

    with override_settings(DAR_RATE_LIMIT_ADDRESS_TURNS=10_000):
        check()
    # Nothing that was refused left a row behind, and the session still works.
    stored = list(Turn.objects.filter(session__pk=session_id).values_list("message", flat=True))
    assert all("\x00" not in message for message in stored)
    response = client.post(
        f"/api/search/sessions/{session_id}/messages/", {"text": "a hat"}, format="json"
    )
    assert response.status_code in (202, 429), response.content


def test_catalog_api_bodies_always_get_a_clear_answer(no_task_queue: list[Any]) -> None:
    catalog = CatalogFactory.create()
    shop = catalog.shop
    admin = shop_admin(shop)
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(admin)
    catalog_fields = {
        "shop": st.just(shop.slug) | NASTY_TEXT,
        "name": st.just("Hats") | NASTY_TEXT,
        "slug": st.uuids().map(lambda u: f"c-{u.hex[:12]}") | NASTY_TEXT,
        "description": NASTY_TEXT,
        "is_public": st.booleans() | JSON_VALUES,
    }

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(["create", "patch", "reembed", "upload"]))
        if kind == "create":
            body = data.draw(bodies(catalog_fields))
            response = client.post("/api/catalogs/", body, content_type="application/json")
            assert_clear_answer(response, (201,))
        elif kind == "patch":
            body = data.draw(bodies(catalog_fields))
            response = client.patch(
                f"/api/catalogs/{catalog.slug}/", body, content_type="application/json"
            )
            assert_clear_answer(response, (200,))
            catalog.refresh_from_db()  # a valid patch may rename its slug
        elif kind == "reembed":
            body = data.draw(bodies({"mode": st.sampled_from(["stale", "all", "bogus"])}))
            response = client.post(
                f"/api/catalogs/{catalog.slug}/reembed/", body, content_type="application/json"
            )
            assert_clear_answer(response, (202,))
        else:
            fields = {
                "title": data.draw(NASTY_TEXT),
                "description": data.draw(NASTY_TEXT),
                "attributes": data.draw(
                    JSON_VALUES.map(json.dumps) | NASTY_TEXT | st.just('{"a": "\\u0000"}')
                ),
            }
            # Multipart form values are text: a lone surrogate cannot be encoded into a body.
            form = {k: v.encode("utf-8", "replace").decode() for k, v in fields.items()}
            from django.core.files.uploadedfile import SimpleUploadedFile

            upload = SimpleUploadedFile("a.png", png_bytes(size=8), content_type="image/png")
            response = client.post(
                f"/api/catalogs/{catalog.slug}/items/", {**form, "files": [upload]}
            )
            assert_clear_answer(response, (200, 201))

    check()


# --- websocket frames -----------------------------------------------------------------------


class LoopThread:
    """An event loop in a thread of its own, so that one socket lives across Hypothesis's
    (synchronous) examples and each example can talk to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.stop()


async def open_socket(session_id: object, key: str) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost"), (b"cookie", f"sessionid={key}".encode())]
    comm = WebsocketCommunicator(application, f"/ws/search/{session_id}/", headers=headers)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    return comm


async def receive(comm: WebsocketCommunicator, timeout: float = 10) -> dict[str, Any]:
    return dict(json.loads(await comm.receive_from(timeout=timeout)))


def frames(item_id: int) -> st.SearchStrategy[str]:
    """Text frames: each type the socket knows with fuzzed fields, any JSON, or not JSON at all."""
    typed = st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("message")},
            optional={"text": st.sampled_from(["a hat", " "]) | NASTY_TEXT | JSON_VALUES},
        ),
        st.fixed_dictionaries(
            {"type": st.just("feedback")},
            optional={
                "item": st.sampled_from([item_id, str(item_id)]) | JSON_VALUES,
                "value": st.sampled_from([1, -1, 0]) | JSON_VALUES,
            },
        ),
        # The item was never shown in this session: every click is refused, with a reason.
        st.fixed_dictionaries(
            {"type": st.just("click")},
            optional={"item": st.sampled_from([item_id, str(item_id)]) | JSON_VALUES},
        ),
        st.fixed_dictionaries({"type": st.just("restore")}, optional={"extra": JSON_VALUES}),
        st.fixed_dictionaries({"type": JSON_VALUES}),
    )
    # A text frame is valid UTF-8 (no lone surrogates) and, for the test client, not empty.
    raw = ANY_TEXT.map(lambda text: text.encode("utf-8", "replace").decode()).filter(bool)
    return (typed | JSON_VALUES).map(json.dumps) | raw


# The consumer's answer to each frame: its own event, or an error saying what was wrong.
ANSWERS = {"message": "turn.accepted", "feedback": "feedback", "restore": "state"}


def test_websocket_frames_always_get_a_clear_answer_and_the_socket_stays_usable(
    loop_thread: LoopThread, no_task_queue: list[Any]
) -> None:
    catalog = CatalogFactory.create()
    item = CatalogItemFactory.create(catalog=catalog)
    key = browser_session_key()
    session = SearchSessionFactory.create(catalog=catalog, session_key=key)
    comm = loop_thread.run(lambda: open_socket(session.pk, key))
    assert loop_thread.run(lambda: receive(comm))["type"] == "state"
    # Found by hand: a NUL killed the consumer (1006), a lone surrogate too.
    for text in ("a mug\x00", "\udc00 a mug"):
        frame = json.dumps({"type": "message", "text": text})
        loop_thread.run(lambda: comm.send_to(text_data=frame))  # noqa: B023
        error = loop_thread.run(lambda: receive(comm))
        assert (error["type"], error["code"]) == ("error", "invalid_text"), error
    loop_thread.run(lambda: comm.send_json_to({"type": "message", "text": "a mug"}))
    assert loop_thread.run(lambda: receive(comm))["type"] == "turn.accepted"

    @FUZZ
    @given(frame=frames(item.pk))
    def check(frame: str) -> None:
        with override_settings(DAR_MAX_TURNS_PER_SESSION=10_000, DAR_RATE_LIMIT_TURNS=10_000):
            loop_thread.run(lambda: comm.send_to(text_data=frame))
            answer = loop_thread.run(lambda: receive(comm))
        if answer["type"] == "error":
            assert answer["code"] != "server_error" and answer["message"], answer
        else:
            kind = json.loads(frame)["type"]
            assert answer["type"] == ANSWERS[kind], (frame, answer)

    with override_settings(DAR_RATE_LIMIT_ADDRESS_TURNS=10_000):
        check()
    # Still open and working after all of that.
    loop_thread.run(lambda: comm.send_json_to({"type": "restore"}))
    assert loop_thread.run(lambda: receive(comm))["type"] == "state"
    loop_thread.run(lambda: comm.disconnect())


@pytest.mark.slow
async def test_a_nul_or_surrogate_frame_is_refused_and_the_next_message_gets_results(
    celery_worker: Any, monkeypatch: Any, settings: Any
) -> None:
    limit_llm_tokens(monkeypatch)
    settings.DAR_TURN_TIME_LIMIT = 900
    settings.DAR_ASK_QUESTIONS = False
    catalog = await sync_to_async(embedded_catalog)(6)
    key = await sync_to_async(browser_session_key)()
    session = await sync_to_async(SearchSessionFactory.create)(catalog=catalog, session_key=key)
    comm = await open_socket(session.pk, key)
    assert (await receive(comm))["type"] == "state"
    for frame in (
        '{"type": "message", "text": "a mug\\u0000"}',
        '{"type": "message", "text": "\\udc00"}',
    ):
        await comm.send_to(text_data=frame)
        error = await receive(comm)
        assert (error["type"], error["code"]) == ("error", "invalid_text"), error
    await comm.send_json_to({"type": "message", "text": "a small red mug"})
    seen: list[dict[str, Any]] = []
    while not any(e["type"] == "results" for e in seen):
        seen.append(await receive(comm, timeout=240))
        assert seen[-1]["type"] != "error", seen
    assert next(e for e in seen if e["type"] == "results")["items"]
    await comm.disconnect()


@pytest.mark.parametrize("raw", ['{"text": "a\\u0000b"}', '{"text": "\\udc00"}', "{not json"])
def test_unparsable_bodies_get_the_one_error_shape(raw: str, no_task_queue: list[Any]) -> None:
    catalog = CatalogFactory.create()
    client, session_id = shopper_with_session(catalog.slug)
    response = client.post(
        f"/api/search/sessions/{session_id}/messages/", raw, content_type="application/json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and body["message"], body
