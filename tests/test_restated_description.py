"""The shopper corrects "what I understood" directly: the rewrite is a message that restarts the
dialogue from it (issue 13). Service, REST, websocket, ranking and the page in Chromium."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from rest_framework.test import APIClient

from dar_site.asgi import application
from retrieval.models import SearchSession, Turn
from retrieval.services.errors import SearchError
from retrieval.turn import submit, text_stage
from retrieval.turn.ranking import dialogue_for, query_text
from tests.browser import CHROMIUM, chromium, live_server, off_loop, open_stored_search
from tests.factories import (
    CatalogFactory,
    CatalogItemFactory,
    SearchSessionFactory,
    browser_session_key,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(no_task_queue: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return no_task_queue


def _session() -> SearchSession:
    return SearchSessionFactory.create(catalog=CatalogFactory.create())


def test_a_restatement_starts_the_dialogue_again_and_later_messages_build_on_it(
    sent: list[Any],
) -> None:
    session = _session()
    submit.submit_message(session, "a green frog")
    submit.submit_message(session, "with big eyes")
    restated = submit.submit_message(session, "a blue cat, sitting", restate=True)
    after = submit.submit_message(session, "with a red collar")

    assert restated.restates and restated.context == ["a blue cat, sitting"]
    assert after.context == ["a blue cat, sitting", "with a red collar"] and not after.restates
    # The transcript keeps every message; the dialogue the models see starts at the rewrite.
    assert list(session.turns.order_by("index").values_list("message", flat=True)) == [
        "a green frog",
        "with big eyes",
        "a blue cat, sitting",
        "with a red collar",
    ]
    text = query_text(dialogue_for(after))
    assert "frog" not in text and "cat" in text and "collar" in text
    assert len(sent) == 2 * 4  # text stage and gpu task of each turn


def test_a_restatement_as_the_first_message_is_an_ordinary_first_message(sent: list[Any]) -> None:
    turn = submit.submit_message(_session(), "a yellow star", restate=True)
    assert turn.context == ["a yellow star"] and turn.index == 0


@pytest.mark.parametrize("bad", ["yes", 1, None, ["true"]])
def test_restate_must_be_true_or_false_and_nothing_is_stored_otherwise(
    bad: Any, sent: list[Any]
) -> None:
    session = _session()
    with pytest.raises(SearchError) as error:
        submit.submit_message(session, "a cat", restate=bad)
    assert error.value.code == "invalid"
    assert not Turn.objects.filter(session=session).exists() and not sent


def _shopper(slug: str) -> tuple[APIClient, str]:
    client = APIClient(enforce_csrf_checks=True)
    token = client.get("/api/csrf/").json()["csrfToken"]
    client.credentials(HTTP_X_CSRFTOKEN=token)
    created = client.post("/api/search/sessions/", {"catalog": slug}, format="json")
    assert created.status_code == 201, created.content
    return client, created.json()["id"]


def test_rest_messages_take_restate_and_turns_report_it(sent: list[Any]) -> None:
    catalog = CatalogFactory.create()
    client, session_id = _shopper(catalog.slug)
    url = f"/api/search/sessions/{session_id}/messages/"
    assert client.post(url, {"text": "a red star"}, format="json").status_code == 202
    answer = client.post(url, {"text": "a blue moon", "restate": True}, format="json")
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert (body["restates"], body["context"], body["index"]) == (True, ["a blue moon"], 1)

    refused = client.post(url, {"text": "a moon", "restate": "sure"}, format="json")
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid" and "restate" in refused.json()["message"]
    session = client.get(f"/api/search/sessions/{session_id}/").json()
    assert [t["restates"] for t in session["turns"]] == [False, True]


async def test_a_restating_socket_frame_is_accepted_as_a_restatement(sent: list[Any]) -> None:
    from asgiref.sync import sync_to_async

    key = await sync_to_async(browser_session_key)()
    session = await sync_to_async(SearchSessionFactory.create)(session_key=key)
    comm = WebsocketCommunicator(
        application,
        f"/ws/search/{session.pk}/",
        headers=[
            (b"cookie", f"sessionid={key}".encode()),
            (b"origin", b"http://127.0.0.1:8000"),
            (b"host", b"127.0.0.1:8000"),
        ],
    )
    connected, _ = await comm.connect(timeout=10)
    assert connected
    assert (await comm.receive_json_from(timeout=10))["type"] == "state"
    await comm.send_json_to({"type": "message", "text": "a smiling sun", "restate": True})
    accepted = await comm.receive_json_from(timeout=10)
    assert (accepted["type"], accepted["restates"]) == ("turn.accepted", True)
    await comm.send_json_to({"type": "message", "text": "a sun", "restate": "maybe"})
    refused = await comm.receive_json_from(timeout=10)
    assert (refused["type"], refused["code"]) == ("error", "invalid")
    await comm.disconnect()


def test_first_results_follow_the_rewrite_not_the_earlier_messages(
    turn_models: None, sent: list[Any], settings: Any
) -> None:
    """The real text stage ranks the rewrite: real MiniLM over the titles, as the demo runs it
    (the offline encoder's random similarities left out)."""
    from catalog.services.embedding import embed_items

    settings.DAR_WEIGHT_PRODUCT_TEXT = 0.5
    settings.DAR_WEIGHT_IMAGE = None  # auto

    catalog = CatalogFactory.create()
    titles = ["green frog", "blue cat", "red apple", "yellow star", "white heart", "brown dog"]
    items = {t: CatalogItemFactory.create(catalog=catalog, title=t) for t in titles}
    assert len(embed_items([i.pk for i in items.values()]).embedded) == len(titles)
    session = SearchSessionFactory.create(catalog=catalog)

    first = submit.submit_message(session, "a green frog")
    text_stage.run_text_stage(first.pk)
    Turn.objects.filter(pk=first.pk).update(status=Turn.Status.DONE)
    restated = submit.submit_message(session, "a blue cat", restate=True)
    text_stage.run_text_stage(restated.pk)

    def top(turn: Turn) -> int:
        return turn.results.filter(final=False).order_by("rank").values_list("item", flat=True)[0]

    assert top(first) == items["green frog"].pk
    assert top(restated) == items["blue cat"].pk


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")
def test_the_page_lets_the_shopper_correct_what_it_understood(sent: list[Any]) -> None:
    with chromium() as browser, live_server() as server:
        page = browser.new_page(viewport={"width": 390, "height": 844})
        session_id = open_stored_search(page, server, status="done")
        button = page.locator("#edit-refined")
        assert button.is_visible() and button.is_enabled()
        box = button.bounding_box()
        assert box and box["height"] >= 44  # a touch target on a phone

        button.click()
        editor = page.locator("#refined-input")
        assert editor.input_value() == page.locator("#refined").text_content()
        editor.fill("")
        page.locator("#refined-send").click()  # empty: refused on the page, nothing sent
        assert "Describe what you" in page.locator("#composer-error").inner_text()

        editor.fill("a round blue shape on white")
        editor.press("Enter")
        page.wait_for_selector(".bubble.user[data-turn='1'] .restated-label")
        assert page.locator("#refined-editor").is_hidden()
        assert page.locator("#send").is_disabled()  # the rewrite runs as the next turn

        turn = off_loop(lambda: Turn.objects.get(session_id=uuid.UUID(session_id), index=1))
        assert turn.restates and turn.context == ["a round blue shape on white"]
        page.close()


def test_the_message_limit_applies_to_a_rewrite(sent: list[Any]) -> None:
    session = _session()
    with pytest.raises(SearchError) as error:
        submit.submit_message(session, "x" * (settings.DAR_MAX_MESSAGE_CHARS + 1), restate=True)
    assert error.value.code == "message_too_long"
