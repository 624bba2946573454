"""What one shopper's connect and message cost the web process under a burst (issue #16: 100
shoppers at once, first results within a second): database round trips the consumers' pool no
longer makes (retrieval/consumer_db.py, retrieval/turn/payloads.py, retrieval/turn/store.py)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection

from retrieval import consumer_db
from retrieval.models import Turn
from retrieval.turn import payloads, store
from tests.factories import SearchSessionFactory, TurnFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _checked_before_first_query() -> bool:
    """Whether Django will health-check this thread's connection before its next query."""
    from retrieval.models import SearchSession

    checked = getattr(connection, "health_check_done", True)
    pending = bool(connection.connection is not None and not checked)
    SearchSession.objects.exists()  # the call's own work
    return pending


def _calls(count: int) -> list[bool]:
    executor = ThreadPoolExecutor(1)  # one thread: every call reuses its connection
    call = consumer_db._PoolCall(
        _checked_before_first_query, thread_sensitive=False, executor=executor
    )

    async def run() -> list[bool]:
        return [await call() for _ in range(count)]

    try:
        return asyncio.run(run())
    finally:
        executor.submit(lambda: connection.close()).result()  # closed by its own thread
        executor.shutdown()


def test_a_connection_used_moments_ago_is_not_checked_again() -> None:
    # The first call opens the connection; the second finds it kept and trusts it: no SELECT 1.
    assert _calls(3) == [False, False, False]


def test_a_connection_idle_for_a_while_is_checked_before_use(monkeypatch: Any) -> None:
    monkeypatch.setattr(consumer_db, "RECHECK_AFTER_IDLE_S", 0.0)
    # Kept, but not trusted: Django checks it before the call's first query.
    assert _calls(2) == [False, True]


def test_a_new_search_sessions_state_needs_three_queries(
    django_assert_num_queries: Any,
) -> None:
    session = SearchSessionFactory.create()
    session = type(session).objects.select_related("catalog").get(pk=session.pk)
    # Feedback, turns, filters: nothing to load of results or previews before the first message.
    with django_assert_num_queries(3):
        state = payloads.session_payload(session)
    assert state["turns"] == [] and state["feedback"] == {}
    TurnFactory.create(session=session, index=0, status=Turn.Status.DONE)
    # Then results and previews, for the whole history at once.
    with django_assert_num_queries(5):
        assert len(payloads.session_payload(session)["turns"]) == 1


def test_storing_a_message_locks_the_session_and_reads_its_filters_at_once() -> None:
    session = SearchSessionFactory.create(filters={"picked": [], "removed": {"brand": 1}})
    TurnFactory.create(session=session, index=0, message="a red mug")
    from django.db import transaction

    with transaction.atomic():
        locked = store.lock_history(session.pk)
    assert locked is not None
    state, history = locked
    assert state == {"picked": [], "removed": {"brand": 1}}
    assert [message for message, *_ in history] == ["a red mug"]
    session.delete()
    assert store.lock_history(session.pk) is None
