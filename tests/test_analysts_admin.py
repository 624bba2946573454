# Django test responses are loosely typed (context_data may be None, streaming_content is
# added at run time), which these admin tests read throughout.
# mypy: disable-error-code="index,attr-defined,union-attr"
"""Analysts' review in the admin: read-only access, shop scoping, filters, exports, dashboard."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import importlib
import io
import json
import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from retrieval.admin import TURN_RANGES
from retrieval.analytics import scope, stats
from retrieval.models import SearchSession, Turn
from tests.factories import (
    CatalogFactory,
    FeedbackFactory,
    PreviewFactory,
    SearchSessionFactory,
    TurnFactory,
    TurnResultFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def analysts_group(db: None) -> Group:
    """The group as migration 0003 creates it.

    Tests that use ``transactional_db`` flush every table when they end, data migrations' rows
    included; re-applying the migration's (idempotent) forward step keeps these tests independent
    of which tests ran before them in the same process.
    """
    migration = importlib.import_module("retrieval.migrations.0003_analysts_group")
    migration.forwards(django_apps, SimpleNamespace(connection=connection))
    return Group.objects.get(name=scope.ANALYSTS_GROUP)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHANGELIST = "admin:retrieval_searchsession_changelist"


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _analyst() -> Any:
    user = UserFactory.create(is_staff=True)
    user.groups.add(Group.objects.get(name=scope.ANALYSTS_GROUP))
    return user


def _shop_admin(*shops: Any) -> Any:
    user = UserFactory.create(is_staff=True)
    views = Permission.objects.filter(
        content_type__app_label="retrieval", codename__startswith="view_"
    ).exclude(codename="view_all_sessions")
    user.user_permissions.add(*views)
    for shop in shops:
        shop.admins.add(user)
    return user


def _session_with_turns(n_turns: int, **kwargs: Any) -> SearchSession:
    session = SearchSessionFactory.create(**kwargs)
    for index in range(n_turns):
        TurnFactory.create(session=session, index=index, message=f"turn {index} of {session.pk}")
    return session


def _listed(response: Any) -> set[Any]:
    return {s.pk for s in response.context_data["cl"].result_list}


def test_analysts_group_has_view_permissions_only() -> None:
    group = Group.objects.get(name=scope.ANALYSTS_GROUP)
    codenames = set(group.permissions.values_list("codename", flat=True))
    models = {"searchsession", "turn", "preview", "turnresult", "feedback"}
    assert codenames == {f"view_{m}" for m in models} | {"view_all_sessions"}


def test_analyst_can_view_but_not_change_or_delete() -> None:
    session = _session_with_turns(2)
    client = _client(_analyst())
    change_url = reverse("admin:retrieval_searchsession_change", args=[session.pk])

    assert client.get(reverse(CHANGELIST)).status_code == 200
    page = client.get(change_url)
    assert page.status_code == 200
    assert page.context_data["has_change_permission"] is False
    assert b'name="_save"' not in page.content

    assert client.post(change_url, {"catalog": session.catalog_id}).status_code == 403
    delete_url = reverse("admin:retrieval_searchsession_delete", args=[session.pk])
    assert client.get(delete_url).status_code == 403
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    assert client.get(reverse("admin:retrieval_searchsession_add")).status_code == 403
    turn = session.turns.first()
    assert client.post(reverse("admin:retrieval_turn_delete", args=[turn.pk])).status_code == 403
    # The bulk delete action is not offered either, so it cannot be posted.
    response = client.post(
        reverse(CHANGELIST), {"action": "delete_selected", "_selected_action": [session.pk]}
    )
    assert SearchSession.objects.filter(pk=session.pk).exists()
    assert Turn.objects.filter(session=session).count() == 2
    assert response.status_code in (200, 302)


def test_shop_admin_sees_only_their_shops_sessions_superuser_sees_all() -> None:
    mine, theirs = CatalogFactory.create(), CatalogFactory.create()
    own = [_session_with_turns(1, catalog=mine) for _ in range(2)]
    other = _session_with_turns(1, catalog=theirs)
    admin_user = _shop_admin(mine.shop)

    client = _client(admin_user)
    assert _listed(client.get(reverse(CHANGELIST))) == {s.pk for s in own}
    other_url = reverse("admin:retrieval_searchsession_change", args=[other.pk])
    assert client.get(other_url).status_code == 302  # "does not exist", back to the index
    turns = client.get(reverse("admin:retrieval_turn_changelist"))
    assert {t.session_id for t in turns.context_data["cl"].result_list} == {s.pk for s in own}
    exported = client.get(
        reverse("admin:retrieval_searchsession_export", args=["sessions", "json"])
    )
    assert {row["id"] for row in json.loads(b"".join(exported.streaming_content))} == {
        str(s.pk) for s in own
    }
    # The catalog filter offers only catalogs the viewer may see.
    assert theirs.name not in client.get(reverse(CHANGELIST)).content.decode()

    superuser = UserFactory.create(is_staff=True, is_superuser=True)
    everything = {s.pk for s in [*own, other]}
    assert _listed(_client(superuser).get(reverse(CHANGELIST))) == everything
    assert _listed(_client(_analyst()).get(reverse(CHANGELIST))) == everything


def test_session_list_filters_by_turn_count_outcome_and_catalog() -> None:
    catalog, other_catalog = CatalogFactory.create(), CatalogFactory.create()
    by_turns = {n: _session_with_turns(n, catalog=catalog) for n in (0, 1, 3, 12)}
    liked = by_turns[3]
    FeedbackFactory.create(turn=liked.turns.get(index=0), value=1)
    FeedbackFactory.create(turn=by_turns[12].turns.get(index=0), value=-1)
    elsewhere = _session_with_turns(5, catalog=other_catalog)
    client = _client(_analyst())
    url = reverse(CHANGELIST)

    for value, _, low, high in TURN_RANGES:
        expected = {
            s.pk
            for n, s in [*by_turns.items(), (5, elsewhere)]
            if n >= low and (high is None or n <= high)
        }
        assert _listed(client.get(url, {"turns": value})) == expected, value
    assert _listed(client.get(url, {"outcome": "liked"})) == {liked.pk}
    # With facet counts shown, every filter option counts its sessions in the database.
    faceted = client.get(url, {"_facets": "True", "outcome": "liked"})
    assert faceted.status_code == 200 and _listed(faceted) == {liked.pk}
    assert _listed(client.get(url, {"outcome": "not_liked"})) == (
        {s.pk for s in by_turns.values()} | {elsewhere.pk}
    ) - {liked.pk}
    assert _listed(client.get(url, {"catalog__id__exact": other_catalog.pk})) == {elsewhere.pk}
    yesterday = timezone.now() - dt.timedelta(days=1)
    old = _session_with_turns(1, catalog=catalog)
    SearchSession.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - dt.timedelta(days=40)
    )
    recent = _listed(client.get(url, {"created_at__gte": yesterday.isoformat()}))
    assert old.pk not in recent and liked.pk in recent


def test_session_page_shows_each_turn_in_full() -> None:
    session = SearchSessionFactory.create()
    turn = TurnFactory.create(
        session=session,
        index=0,
        message="a teal ceramic vase",
        refined_query="A tall teal ceramic vase with a narrow neck",
        question="Do you want handles?",
        timings={"refine": 812.5, "generate": 2045.0},
    )
    preview = PreviewFactory.create(turn=turn, index=0)
    results = [TurnResultFactory.create(turn=turn, rank=r, score=0.9 - r / 10) for r in range(3)]
    TurnResultFactory.create(turn=turn, rank=0, final=False, score=0.11)  # provisional: not shown
    FeedbackFactory.create(turn=turn, item=results[1].item, value=1)

    page = _client(_analyst()).get(
        reverse("admin:retrieval_searchsession_change", args=[session.pk])
    )
    html = page.content.decode()
    assert turn.message in html and turn.refined_query in html and turn.question in html
    # Signed media URLs carry a query string, which the page HTML-escapes (&amp;).
    assert escape(preview.image.url) in html
    for result in results:
        assert escape(result.item.image.url) in html
        assert f"#{result.rank} · {result.score:.3f}" in html
    assert "0.110" not in html
    assert "👍 like" in html
    assert "refine" in html and "2,045 ms" in html


def test_exports_stream_sessions_and_turns_as_csv_and_json() -> None:
    sessions = [_session_with_turns(n) for n in (1, 2)]
    first_turn = sessions[1].turns.get(index=0)
    first_turn.message = "=HYPERLINK('http://evil')"
    first_turn.timings = {"rank": 12.0}
    first_turn.save()
    TurnResultFactory.create(turn=first_turn, rank=0, score=0.75)
    FeedbackFactory.create(turn=first_turn, value=1)
    _session_with_turns(3)  # not selected
    client = _client(_analyst())
    selected = [str(s.pk) for s in sessions]

    def action(name: str) -> Any:
        response = client.post(reverse(CHANGELIST), {"action": name, "_selected_action": selected})
        assert response.streaming
        return b"".join(response.streaming_content).decode()

    rows = list(csv.DictReader(io.StringIO(action("export_sessions_csv"))))
    assert {r["id"] for r in rows} == set(selected)
    by_id = {r["id"]: r for r in rows}
    assert by_id[selected[1]]["turns"] == "2" and by_id[selected[1]]["liked"] == "True"
    assert by_id[selected[1]]["first_message"].startswith("'=")  # no formula injection
    assert "session_key" not in rows[0]

    turns = json.loads(action("export_turns_json"))
    assert sorted((t["session_id"], t["index"]) for t in turns) == sorted(
        (str(s.pk), i) for s in sessions for i in range(s.turns.count())
    )
    exported = next(t for t in turns if t["message"] == first_turn.message)
    assert exported["timings_ms"] == {"rank": 12.0}
    assert exported["top_results"][0]["score"] == 0.75
    assert exported["feedback"][0]["value"] == 1

    turn_rows = list(csv.DictReader(io.StringIO(action("export_turns_csv"))))
    assert len(turn_rows) == len(turns)
    assert json.loads(action("export_sessions_json"))[0]["id"] in selected

    # The export view takes the changelist's filters from its query string.
    url = reverse("admin:retrieval_searchsession_export", args=["sessions", "csv"])
    filtered = client.get(url, {"turns": "2-3"})
    ids = {
        r["id"] for r in csv.DictReader(io.StringIO(b"".join(filtered.streaming_content).decode()))
    }
    assert ids == {str(s.pk) for s in SearchSession.objects.all() if 2 <= s.turns.count() <= 3}
    assert (
        client.get(reverse("admin:retrieval_searchsession_export", args=["x", "csv"])).status_code
        == 400
    )


def _dashboard_data() -> tuple[Any, list[float]]:
    catalog = CatalogFactory.create()
    now = timezone.now()
    refine_ms = [100.0, 250.0, 400.0, 1000.0]
    for day, ms in enumerate(refine_ms):
        session = _session_with_turns(day + 1, catalog=catalog)
        SearchSession.objects.filter(pk=session.pk).update(created_at=now - dt.timedelta(days=1))
        session.turns.update(
            status=Turn.Status.DONE,
            timings={"refine": ms, "rank": 5.0, "note": "ignored"},
            created_at=now - dt.timedelta(days=1),
        )
        if day % 2 == 0:
            FeedbackFactory.create(turn=session.turns.first(), value=1 if day == 0 else -1)
    return catalog, refine_ms


def test_dashboard_figures_match_the_data() -> None:
    catalog, refine_ms = _dashboard_data()
    _session_with_turns(2)  # another catalog, filtered out below
    figures = stats.dashboard(SearchSession.objects.filter(catalog=catalog))

    assert figures.sessions == len(refine_ms)
    assert figures.turns_per_session == {n: 1 for n in range(1, len(refine_ms) + 1)}
    # Each turn of session i recorded refine_ms[i]: percentiles are over turns, not sessions.
    per_turn = [ms for i, ms in enumerate(refine_ms) for _ in range(i + 1)]
    (point,) = figures.latency["refine"]
    assert point.turns == len(per_turn)
    assert point.p50 == pytest.approx(np.percentile(per_turn, 50))
    assert point.p95 == pytest.approx(np.percentile(per_turn, 95))
    assert set(figures.latency) == {"refine", "rank"}
    (day,) = figures.feedback_by_day
    assert (day.sessions, day.with_feedback, day.with_like) == (4, 2, 1)
    assert figures.feedback_rate == pytest.approx(0.5)
    assert (figures.likes, figures.dislikes) == (1, 1)


def test_dashboard_page_draws_png_charts_for_staff_only() -> None:
    _dashboard_data()
    url = reverse("admin:retrieval_searchsession_dashboard")
    page = _client(_analyst()).get(url, {"days": 7})
    assert page.status_code == 200
    html = page.content.decode()
    for chart in ("turns", "latency", "feedback"):
        start = html.index(f'id="chart-{chart}" src="data:image/png;base64,') + len(
            f'id="chart-{chart}" src="data:image/png;base64,'
        )
        data = base64.b64decode(html[start : html.index('"', start)])
        assert data.startswith(PNG_MAGIC)
    # Nothing is loaded from another host (no charting library from a CDN).
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', html)

    # A shop admin's dashboard counts only their own shop's sessions.
    own = CatalogFactory.create()
    _session_with_turns(3, catalog=own)
    scoped = _client(_shop_admin(own.shop)).get(url)
    assert scoped.context_data["figures"].sessions == 1
    assert (
        _client(_shop_admin(own.shop)).get(url, {"catalog": CatalogFactory.create().pk}).status_code
        == 403
    )

    shopper = UserFactory.create(is_staff=False)
    assert _client(shopper).get(url).status_code == 302  # to the admin login
    no_perms = UserFactory.create(is_staff=True)
    assert _client(no_perms).get(url).status_code == 403
