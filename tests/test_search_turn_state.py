"""The shopper page's turn state in headless Chromium: one turn at a time, a warning before a long
message would be refused, the question as part of the turn, timings for staff only, keyboard use.

The page restores a stored session; live events are sent the way the workers send them
(``retrieval.services.events.emit`` through the channel layer), so no model runs.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.conf import settings

from retrieval.models import Feedback, Turn
from retrieval.services import events
from tests.browser import CHROMIUM, chromium, live_server, off_loop, open_stored_search
from tests.factories import UserFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


@pytest.fixture
def page(transactional_db: None, settings: Any) -> Any:
    settings.DAR_ASK_QUESTIONS = True
    with chromium() as browser:
        yield browser.new_page(viewport={"width": 1280, "height": 900})


def _emit(session_id: str, *batch: dict[str, Any]) -> None:
    off_loop(lambda: events.emit(session_id, *batch))


def test_a_running_turn_holds_the_composer_until_it_is_done(page: Any) -> None:
    with live_server() as server:
        session_id = open_stored_search(page, server, status="running")
        page.wait_for_selector("#composer[data-busy='true']")
        assert page.locator("#send").is_disabled()
        assert "Searching" in page.locator("#composer-status").inner_text()
        # Typing goes on; sending waits.
        page.fill("#message", "in green please")
        page.press("#message", "Enter")
        assert (
            off_loop(lambda: Turn.objects.filter(session_id=uuid.UUID(str(session_id))).count())
            == 1
        )

        # Overload: the page says where the turn waits.
        _emit(session_id, {"type": "turn.queued", "turn": 0, "position": 3, "expected_wait_s": 12})
        page.wait_for_function(
            "() => document.getElementById('composer-status').textContent.includes('position 3')"
        )
        assert "about 12 s" in page.locator("#composer-status").inner_text()

        # Final results: the question is being written in the chat; "Done" neither spins nor ends.
        _emit(session_id, {"type": "results", "turn": 0, "final": True, "items": []})
        page.wait_for_selector("#asking.bubble.typing")
        assert page.locator("#progress").get_attribute("data-stage") == "asking"
        assert page.locator("[data-step='done']").get_attribute("data-state") is None
        assert page.locator("#send").is_disabled()

        _emit(
            session_id,
            {"type": "question", "turn": 0, "question": "Which shade of green?"},
            {"type": "turn.done", "turn": 0, "timings": {"text": 105, "total": 4100}},
        )
        page.wait_for_selector("#progress[data-stage='done']")
        assert page.locator("#asking").count() == 0
        assert page.locator(".bubble.question").last.inner_text() == "Which shade of green?"
        assert page.locator("#send").is_enabled()
        assert page.locator("#composer-status").inner_text() == ""
        # Shoppers see no developer timings.
        assert page.locator("#timings").count() == 0


def test_what_was_understood_is_marked_as_updating_until_the_next_description(
    page: Any,
) -> None:
    with live_server() as server:
        session_id = open_stored_search(page, server)
        refined, section = page.locator("#refined"), page.locator("#refined-section")
        before = refined.inner_text()
        assert section.get_attribute("data-updating") == "false"
        assert refined.get_attribute("aria-busy") == "false"
        assert page.locator("#refined-updating").is_hidden()

        # Sent: the previous turn's description stays readable, marked as about to change.
        page.fill("#message", "in blue please")
        page.press("#message", "Enter")
        assert section.get_attribute("data-updating") == "true"
        assert refined.get_attribute("aria-busy") == "true"
        assert page.locator("#refined-updating").is_visible()
        assert refined.inner_text() == before
        assert page.locator("#edit-refined").is_hidden()  # nothing to correct meanwhile
        # Still so once the server accepted the turn (turn.accepted starts turn 1).
        page.wait_for_selector(".bubble.user >> nth=1", timeout=30_000)
        assert section.get_attribute("data-updating") == "true"

        _emit(
            session_id,
            {
                "type": "query.refined",
                "turn": 1,
                "description": "a bright blue product",
                "prompts": ["a bright blue product photo"],
                "fallback": False,
            },
        )
        page.wait_for_selector("#refined-section[data-updating='false']")
        assert refined.inner_text() == "a bright blue product"
        assert refined.get_attribute("aria-busy") == "false"
        assert page.locator("#refined-updating").is_hidden()
        assert page.locator("#prompts li").all_inner_texts() == ["a bright blue product photo"]


def test_a_long_paste_is_kept_and_warned_about_not_cut(page: Any) -> None:
    limit = settings.DAR_MAX_MESSAGE_CHARS
    with live_server() as server:
        session_id = open_stored_search(page, server)
        page.fill("#message", "x" * int(limit * 0.95))
        assert page.locator("#char-count").get_attribute("data-state") == "near"
        assert page.locator("#send").is_enabled()

        page.fill("#message", "y" * 5000)
        assert page.evaluate("document.getElementById('message').value.length") == 5000
        assert page.locator("#char-count").get_attribute("data-state") == "over"
        assert page.locator("#send").is_disabled()
        error = page.locator("#composer-error")
        assert error.is_visible()
        assert "5000 characters" in error.inner_text() and f"at most {limit}" in error.inner_text()
        page.press("#message", "Enter")
        assert (
            off_loop(lambda: Turn.objects.filter(session_id=uuid.UUID(str(session_id))).count())
            == 1
        )

        # Shortened: the warning goes, Send comes back.
        page.fill("#message", "y" * 20)
        assert not error.is_visible()
        assert page.locator("#send").is_enabled()


def test_staff_see_the_stage_timings(page: Any) -> None:
    staff = off_loop(lambda: UserFactory.create(is_staff=True, is_superuser=True))
    with live_server() as server:
        open_stored_search(page, server, user=staff)
        page.wait_for_function(
            "() => document.getElementById('timings').textContent.includes('105 ms')"
        )
        assert "refine 2.3 s" in page.locator("#timings").inner_text()


def test_the_page_works_from_the_keyboard_alone(page: Any) -> None:
    with live_server() as server:
        session_id = open_stored_search(page, server)
        page.evaluate("document.activeElement.blur()")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip-link"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "results-section"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "result-open"
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "[document.activeElement.className, document.activeElement.dataset.value,"
            " document.activeElement.closest('.result-card').dataset.itemId]"
        )
        assert focused[:2] == ["feedback-button", "1"]
        page.keyboard.press("Space")
        page.wait_for_selector(
            ".result-card:first-child .feedback-button[data-value='1'][aria-pressed='true']"
        )
        liked = off_loop(
            lambda: list(
                Feedback.objects.filter(session_id=uuid.UUID(str(session_id))).values_list(
                    "item_id", "value"
                )
            )
        )
        assert liked == [(int(focused[2]), 1)]

        # Back to the composer with Shift+Tab... or straight there: it takes Enter to send.
        page.focus("#message")
        page.keyboard.type("now in blue")
        page.keyboard.press("Enter")
        page.wait_for_selector(".bubble.user >> nth=1", timeout=30_000)
        assert page.locator(".bubble.user").nth(1).inner_text() == "now in blue"
        assert page.locator("#send").is_disabled()
