# Django test responses are loosely typed (context_data may be None, streaming_content is
# added at run time), which these admin tests read throughout.
# mypy: disable-error-code="index,attr-defined,union-attr"
"""The analysts' dashboard: fitted time axes, queue-inclusive latency, sessions that count, the
funnel, the "nothing useful found" list, top queries, fallback rate, filters and exports.

Every figure is checked against what the known data make it (numpy for the percentiles).
"""

from __future__ import annotations

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
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from retrieval.analytics import charts, outcomes, scope, stats, tables, timeaxis
from retrieval.models import SearchSession, Turn
from tests.factories import (
    CatalogFactory,
    FeedbackFactory,
    ProductClickFactory,
    SearchSessionFactory,
    TurnFactory,
    TurnResultFactory,
    UserFactory,
    shop_admin,
)

pytestmark = pytest.mark.django_db

DASHBOARD = "admin:retrieval_searchsession_dashboard"
EXPORT = "admin:retrieval_searchsession_dashboard_export"


@pytest.fixture(autouse=True)
def analysts_group(db: None) -> Group:
    # As in test_analysts_admin: re-apply migration 0003's idempotent step (flushes drop it).
    migration = importlib.import_module("retrieval.migrations.0003_analysts_group")
    migration.forwards(django_apps, SimpleNamespace(connection=connection))
    return Group.objects.get(name=scope.ANALYSTS_GROUP)


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _analyst() -> Any:
    user = UserFactory.create(is_staff=True)
    user.groups.add(Group.objects.get(name=scope.ANALYSTS_GROUP))
    return user


def _day(days_ago: int) -> dt.date:
    return timezone.localdate() - dt.timedelta(days=days_ago)


def _at(day: dt.date, hour: int, minute: int = 0, second: float = 0) -> dt.datetime:
    start = dt.datetime.combine(day, dt.time(hour, minute))
    return timezone.make_aware(start + dt.timedelta(seconds=second))


def _turn(
    session: SearchSession,
    index: int,
    arrived: dt.datetime,
    *,
    queued_s: float = 0.0,
    run_s: float = 1.0,
    status: str = Turn.Status.DONE,
    **fields: Any,
) -> Turn:
    """A turn that arrived at ``arrived``, waited ``queued_s`` and ran ``run_s`` seconds, with the
    timings the pipeline records (``total`` leaves out the queue)."""
    started = arrived + dt.timedelta(seconds=queued_s)
    finished = started + dt.timedelta(seconds=run_s)
    turn = TurnFactory.create(
        session=session,
        index=index,
        status=status,
        started_at=started,
        finished_at=finished,
        timings={"queued": queued_s * 1000, "total": run_s * 1000},
        **fields,
    )
    Turn.objects.filter(pk=turn.pk).update(created_at=arrived)
    if index == 0:
        SearchSession.objects.filter(pk=session.pk).update(created_at=arrived)
    turn.refresh_from_db()
    return turn


def _figures(**filters: Any) -> stats.Dashboard:
    return stats.dashboard(SearchSession.objects.filter(**filters))


# --- the time axis ------------------------------------------------------------------------------


def test_time_axis_fits_the_span_of_the_data() -> None:
    day = dt.datetime(2026, 11, 20)
    one_day = timeaxis.fit(day.replace(hour=9, minute=10), day.replace(hour=17, minute=40))
    assert one_day == timeaxis.TimeAxis("hour", day.replace(hour=9), day.replace(hour=18))
    assert one_day.label == "hour (2026-11-20)" and one_day.label_format == "%H:%M"
    assert one_day.buckets == 9 and one_day.tick_interval == 1

    weeks = timeaxis.fit(day, day + dt.timedelta(days=20, hours=5))
    assert weeks == timeaxis.TimeAxis("day", day, day + dt.timedelta(days=21))
    assert weeks.tick_interval == 3  # 21 buckets, at most 10 labels

    # Beyond DAILY_UP_TO: weeks, starting on Mondays (2026-11-16 is one).
    long = timeaxis.fit(day, day + dt.timedelta(days=200))
    assert long.bucket == "week" and long.start == dt.datetime(2026, 11, 16)
    assert long.start.weekday() == 0 and long.end > day + dt.timedelta(days=200)
    # A single moment still gets a bucket-wide axis, not a zero-width (or multi-year) one.
    single = timeaxis.fit(day.replace(hour=9, minute=30), day.replace(hour=9, minute=30))
    assert (single.start, single.end) == (day.replace(hour=9), day.replace(hour=10))


def test_one_day_of_data_is_charted_in_hours_of_that_day() -> None:
    """The reported bug: one day of data drew a date axis from 2025-01 to 2029-01."""
    from matplotlib.dates import date2num

    day = _day(3)
    for n, (hour, minute) in enumerate([(9, 10), (12, 0), (17, 40)]):
        session = SearchSessionFactory.create()
        _turn(session, 0, _at(day, hour, minute), run_s=2.0 + n)
        FeedbackFactory.create(turn=session.turns.get(), value=1)
    figures = _figures()

    axis = figures.axis
    assert axis is not None and axis.bucket == "hour"
    assert (axis.start, axis.end) == (
        dt.datetime.combine(day, dt.time(9)),
        dt.datetime.combine(day, dt.time(18)),
    )
    assert [p.at.hour for p in figures.end_to_end] == [9, 12, 17]
    built = {
        "e2e": charts.end_to_end_figure(figures.end_to_end, axis),
        "latency": charts.latency_figure(figures.latency, axis),
        "feedback": charts.feedback_figure(figures.feedback_over_time, axis),
        "fallback": charts.fallback_figure(figures.fallback_over_time, axis),
    }
    for name, fig in built.items():
        assert fig is not None, name
        ax = fig.axes[0]
        fig.canvas.draw()
        assert ax.get_xlim() == pytest.approx((date2num(axis.start), date2num(axis.end))), name
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all(re.fullmatch(r"\d\d:00", text) for text in labels), (name, labels)
        assert labels[0] == "09:00" and labels[-1] == "18:00", (name, labels)
        assert ax.get_xlabel() == f"hour ({day:%Y-%m-%d})"
        # Every point lies inside the axis, in the middle of its hour.
        for line in ax.get_lines():
            xs = line.get_xdata(orig=False)
            assert all(date2num(axis.start) < x < date2num(axis.end) for x in xs), name


def test_weeks_of_data_are_charted_in_days() -> None:
    for days_ago in (20, 10, 1):
        _turn(SearchSessionFactory.create(), 0, _at(_day(days_ago), 12))
    figures = _figures()
    assert figures.axis is not None and figures.axis.bucket == "day"
    assert figures.axis.start == dt.datetime.combine(_day(20), dt.time())
    assert figures.axis.end == dt.datetime.combine(_day(0), dt.time())
    assert [p.at.date() for p in figures.end_to_end] == [_day(20), _day(10), _day(1)]


# --- what counts --------------------------------------------------------------------------------


def test_latency_includes_the_time_a_turn_waited_in_the_queue() -> None:
    """The reported bug: one turn was queued 9.0 s and its "total" said 3.2 s."""
    session = SearchSessionFactory.create()
    day = _day(2)
    slow = _turn(session, 0, _at(day, 10), queued_s=9.0, run_s=3.2)
    assert slow.timings == {"queued": 9000.0, "total": 3200.0}
    figures = _figures()
    assert figures.end_to_end_p50 == pytest.approx(12_200)
    (point,) = figures.end_to_end
    assert (point.turns, point.p50, point.p95) == (1, pytest.approx(12_200), pytest.approx(12_200))

    # Percentiles over several turns, as numpy computes them; failed turns are left out.
    waits = [(0.5, 1.0), (2.0, 2.5), (0.0, 4.0), (30.0, 6.0)]
    for n, (queued, ran) in enumerate(waits, start=1):
        _turn(session, n, _at(day, 10, n), queued_s=queued, run_s=ran)
    _turn(session, 9, _at(day, 10, 30), queued_s=100.0, status=Turn.Status.FAILED)
    figures = _figures()
    end_to_end = [12_200.0] + [1000 * (q + r) for q, r in waits]
    assert figures.end_to_end_p50 == pytest.approx(np.percentile(end_to_end, 50))
    assert figures.end_to_end_p95 == pytest.approx(np.percentile(end_to_end, 95))

    # The session page shows it beside the stage timings.
    page = _client(_analyst()).get(
        reverse("admin:retrieval_searchsession_change", args=[session.pk])
    )
    html = page.content.decode()
    assert stats.END_TO_END in html and "12,200 ms" in html and "3,200 ms" in html


def test_sessions_without_turns_are_not_counted() -> None:
    """The reported bug: sessions that never got a message were counted (and diluted rates)."""
    day = _day(1)
    with_turns = [SearchSessionFactory.create() for _ in range(3)]
    for n, session in enumerate(with_turns):
        _turn(session, 0, _at(day, 9 + n))
    FeedbackFactory.create(turn=with_turns[0].turns.get(), value=1)
    for _ in range(5):
        SearchSessionFactory.create()  # opened the page, never typed
    figures = _figures()
    assert figures.sessions == 3
    assert figures.turns_per_session == {1: 3}
    assert sum(d.sessions for d in figures.feedback_over_time) == 3
    assert figures.feedback_rate == pytest.approx(1 / 3)
    assert figures.funnel[0].sessions == 3

    only_empty = SearchSession.objects.filter(turns__isnull=True)
    assert only_empty.count() == 5
    empty = stats.dashboard(only_empty)
    assert (empty.sessions, empty.axis, empty.funnel) == (0, None, [])


# --- funnel, nothing useful, top queries, fallback -----------------------------------------------


def _funnel_data() -> dict[str, Any]:
    """Four sessions: A rates and clicks, B rates, C only got results, D failed."""
    day = _day(1)
    a, b, c, d = (SearchSessionFactory.create() for _ in range(4))
    a0 = _turn(a, 0, _at(day, 9), message="Red  dress.")
    a1 = _turn(a, 1, _at(day, 9, 5), message="red dress", refinement_fallback=True)
    top_a = TurnResultFactory.create(turn=a1, rank=0, score=0.61)
    TurnResultFactory.create(turn=a0, rank=0, score=0.55)
    FeedbackFactory.create(turn=a1, item=top_a.item, value=1)
    ProductClickFactory.create(turn=a1, item=top_a.item)
    ProductClickFactory.create(turn=a1, item=top_a.item)  # twice: still one turn, one session
    b0 = _turn(b, 0, _at(day, 10), message=" RED DRESS!", refined_query="A red dress.")
    TurnResultFactory.create(turn=b0, rank=0, score=0.08)  # low
    FeedbackFactory.create(turn=b0, value=-1)
    c0 = _turn(c, 0, _at(day, 11), message="blue hat", refined_query="a red dress")
    TurnResultFactory.create(turn=c0, rank=0, score=0.45)
    d0 = _turn(d, 0, _at(day, 12), message="green shoes", status=Turn.Status.FAILED)
    Turn.objects.filter(pk=d0.pk).update(error_code="timed_out")
    return {"a0": a0, "a1": a1, "b0": b0, "c0": c0, "d0": d0}


def test_funnel_counts_sessions_and_turns_at_each_stage() -> None:
    _funnel_data()
    funnel = _figures().funnel
    assert [(s.key, s.sessions, s.turns) for s in funnel] == [
        ("all", 4, 5),
        ("done", 3, 4),
        ("rated", 2, 2),
        ("clicked", 1, 1),
    ]
    assert [s.of_first for s in funnel] == [1.0, 0.75, 0.5, 0.25]


def test_nothing_useful_lists_each_turn_with_why(settings: Any) -> None:
    settings.DAR_ANALYTICS_LOW_SCORE = 0.2
    turns = _funnel_data()
    listed = {(t.session_id, t.index): t for t in _figures().nothing_useful}
    reasons = {key: t.reasons for key, t in listed.items()}
    a1, b0, c0, d0 = turns["a1"], turns["b0"], turns["c0"], turns["d0"]
    assert reasons == {
        # rated and clicked, but the LLM fell back to the shopper's words
        (a1.session_id, 1): ("fallback",),
        # rated (so not "no interaction"), but the best result scored 0.08
        (b0.session_id, 0): ("low_score",),
        # the last turn, nothing rated or opened
        (c0.session_id, 0): ("no_interaction",),
        (d0.session_id, 0): ("failed",),
    }
    # a0 is not listed: another message followed it, and its results scored well.
    assert (turns["a0"].session_id, 0) not in listed
    assert listed[(d0.session_id, 0)].error_code == "timed_out"
    assert listed[(b0.session_id, 0)].top_score == pytest.approx(0.08)
    # A turn with no final result at all.
    empty = _turn(SearchSessionFactory.create(), 0, _at(_day(1), 13))
    FeedbackFactory.create(turn=empty, value=1)  # rated an earlier result: still "no results"
    (row,) = [t for t in _figures().nothing_useful if t.session_id == empty.session_id]
    assert row.reasons == ("no_results",)

    settings.DAR_ANALYTICS_LOW_SCORE = 0.5
    raised = {(t.session_id, t.index): t.reasons for t in _figures().nothing_useful}
    assert raised[(c0.session_id, 0)] == ("low_score", "no_interaction")

    html = _client(_analyst()).get(reverse(DASHBOARD)).content.decode()
    shown = re.findall(r'<span class="reason">([^<]+)</span>', html)
    assert sorted(shown) == sorted(outcomes.REASONS[r] for t in raised.values() for r in t)


def test_top_queries_are_normalised_and_counted() -> None:
    _funnel_data()
    figures = _figures()
    typed = {q.query: (q.turns, q.sessions) for q in figures.top_typed}
    # "Red  dress.", "red dress" and " RED DRESS!" are one query; two sessions typed it.
    assert typed == {"red dress": (3, 2), "blue hat": (1, 1), "green shoes": (1, 1)}
    assert figures.top_typed[0].query == "red dress"
    refined = {q.query: (q.turns, q.sessions) for q in figures.top_refined}
    assert refined == {"a red dress": (2, 2)}


def test_fallback_rate_is_over_done_turns() -> None:
    _funnel_data()
    figures = _figures()
    # Done turns: a0, a1 (fallback), b0, c0; d0 failed.
    assert (figures.fallback_turns, figures.done_turns) == (1, 4)
    assert figures.fallback_rate == pytest.approx(0.25)
    html = _client(_analyst()).get(reverse(DASHBOARD)).content.decode()
    assert "1 of 4 done turns (25%)" in html


# --- the page: filters, scope, exports -----------------------------------------------------------


def test_dashboard_filters_by_date_range_and_catalog() -> None:
    mine, other = CatalogFactory.create(), CatalogFactory.create()
    for days_ago, catalog in [(40, mine), (10, mine), (9, other), (2, mine)]:
        _turn(SearchSessionFactory.create(catalog=catalog), 0, _at(_day(days_ago), 12))
    client = _client(_analyst())

    def sessions(**params: Any) -> int:
        response = client.get(reverse(DASHBOARD), params)
        assert response.status_code == 200, response.content
        return int(response.context_data["figures"].sessions)

    assert sessions() == 3  # the last 30 days
    assert sessions(days=90) == 4
    assert sessions(start=_day(10).isoformat(), end=_day(9).isoformat()) == 2
    assert sessions(start=_day(10).isoformat()) == 3
    assert sessions(end=_day(10).isoformat()) == 2  # inclusive end, no start
    assert sessions(days=90, catalog=mine.pk) == 3
    assert sessions(start=_day(50).isoformat(), catalog=other.pk) == 1

    bad = client.get(reverse(DASHBOARD), {"start": "yesterday"})
    assert bad.status_code == 400 and b"start must be a date like" in bad.content
    backwards = client.get(reverse(DASHBOARD), {"start": str(_day(1)), "end": str(_day(5))})
    assert backwards.status_code == 400 and b"before it starts" in backwards.content
    # Still the dashboard, form included, for the period alone: not a bare error text.
    for answer in (bad, backwards):
        assert b'class="dashboard-filter"' in answer.content and b"errornote" in answer.content
        assert answer.context_data["figures"].sessions == 3


def test_dashboard_says_which_period_it_shows_and_what_its_latency_figures_mean() -> None:
    mine = CatalogFactory.create(name="Summer shoes")
    _turn(SearchSessionFactory.create(catalog=mine), 0, _at(_day(2), 12), queued_s=1.0, run_s=2.5)
    client = _client(_analyst())

    def shown(**params: Any) -> str:
        html = client.get(reverse(DASHBOARD), params).content.decode()
        period = re.search(r'<p id="dashboard-period"[^>]*>(.*?)</p>', html, re.S)
        assert period is not None
        return " ".join(re.sub(r"<[^>]+>", "", period.group(1)).split())

    def day(days_ago: int) -> str:
        d = _day(days_ago)
        return f"{d.day} {d:%b %Y}"

    def span(first: str, last: str) -> str:
        return f"{first} \N{EN DASH} {last}"

    assert shown() == f"Showing Last 30 days: {span(day(30), day(0))}, all catalogs."
    assert shown(days=7, catalog=mine.pk) == (
        f"Showing Last 7 days: {span(day(7), day(0))}, catalog “Summer shoes”."
    )
    start, end = _day(10).isoformat(), _day(3).isoformat()
    ranged = shown(start=start, end=end)
    assert ranged == f"Showing Date range: {span(day(10), day(3))}, all catalogs."
    assert shown(start=start) == f"Showing Date range: {span(day(10), 'today')}, all catalogs."
    # With dates, the period list says so rather than showing its first choice as if it applied.
    html = client.get(reverse(DASHBOARD), {"start": start}).content.decode()
    assert '<option value="" selected>dates (from, to)</option>' in html
    assert "dates (from, to)" not in client.get(reverse(DASHBOARD)).content.decode()

    # p50 and p95 are explained once, with their unit; every latency column names it too.
    html = client.get(reverse(DASHBOARD)).content.decode()
    legend = re.search(r'<p id="latency-legend"[^>]*>(.*?)</p>', html, re.S)
    assert legend is not None and "median" in legend.group(1)
    assert "milliseconds (ms)" in legend.group(1)
    assert "p50 (median) 3,500 ms, p95 3,500 ms" in html
    assert html.count("p50 (median), ms") == 2 and html.count("p95, ms") == 2


def test_shop_admin_sees_only_their_shops_figures_and_exports() -> None:
    mine, theirs = CatalogFactory.create(), CatalogFactory.create()
    _turn(SearchSessionFactory.create(catalog=mine), 0, _at(_day(1), 9), message="my query")
    _turn(SearchSessionFactory.create(catalog=theirs), 0, _at(_day(1), 9), message="their query")
    admin = shop_admin(mine.shop)
    client = _client(admin)
    page = client.get(reverse(DASHBOARD))
    assert page.status_code == 200
    figures = page.context_data["figures"]
    assert figures.sessions == 1 and [q.query for q in figures.top_typed] == ["my query"]
    assert "their query" not in page.content.decode()
    exported = client.get(reverse(EXPORT, args=["top_typed", "json"]))
    assert [row["query"] for row in json.loads(b"".join(exported.streaming_content))] == [
        "my query"
    ]
    useless = client.get(reverse(EXPORT, args=["nothing_useful", "json"]))
    assert {r["message"] for r in json.loads(b"".join(useless.streaming_content))} == {"my query"}
    for url in (reverse(DASHBOARD), reverse(EXPORT, args=["funnel", "csv"])):
        assert client.get(url, {"catalog": theirs.pk}).status_code == 403


def test_each_table_exports_as_csv_and_json_for_the_same_filter() -> None:
    _funnel_data()
    _turn(SearchSessionFactory.create(), 0, _at(_day(60), 9), message="old")  # outside 30 days
    client = _client(_analyst())
    page = client.get(reverse(DASHBOARD))
    figures = page.context_data["figures"]
    html = page.content.decode()
    for name, fields in tables.TABLES.items():
        links = page.context_data["exports"][name]
        assert links["csv"] in html.replace("&amp;", "&")
        as_json = json.loads(b"".join(client.get(links["json"]).streaming_content))
        as_csv = list(
            csv.DictReader(
                io.StringIO(b"".join(client.get(links["csv"]).streaming_content).decode())
            )
        )
        assert len(as_json) == len(as_csv), name
        assert all(list(row) == fields for row in as_json), name
        if as_csv:
            assert list(as_csv[0]) == fields, name
    funnel = json.loads(
        b"".join(
            client.get(reverse(EXPORT, args=["funnel", "json"]), {"days": 30}).streaming_content
        )
    )
    assert [(r["stage"], r["sessions"], r["turns"]) for r in funnel] == [
        (s.key, s.sessions, s.turns) for s in figures.funnel
    ]
    useless = json.loads(
        b"".join(client.get(reverse(EXPORT, args=["nothing_useful", "json"])).streaming_content)
    )
    assert sorted(tuple(r["reasons"]) for r in useless) == sorted(
        t.reasons for t in figures.nothing_useful
    )
    assert "old" not in {r["message"] for r in useless}
    wide = client.get(reverse(EXPORT, args=["top_typed", "json"]), {"days": 90})
    assert "old" in {r["query"] for r in json.loads(b"".join(wide.streaming_content))}
    assert client.get(reverse(EXPORT, args=["nope", "csv"])).status_code == 400
    assert client.get(reverse(EXPORT, args=["funnel", "xml"])).status_code == 400
    bad = client.get(reverse(EXPORT, args=["funnel", "csv"]), {"end": "soon"})
    assert bad.status_code == 400


def test_dashboard_page_has_no_inline_script_and_no_external_host() -> None:
    _funnel_data()
    html = _client(_analyst()).get(reverse(DASHBOARD)).content.decode()
    for chart in ("funnel", "e2e", "fallback", "turns", "latency", "feedback"):
        assert f'id="chart-{chart}" src="data:image/png;base64,' in html, chart
    assert not re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html)  # every script is a file
    assert not re.findall(r'(?:src|href)="(?:https?:)?//', html)


# --- in a browser -------------------------------------------------------------------------------

SHOTS_ENV = "DAR_TEST_SCREENSHOTS"  # where to keep the screenshots for people to look at


def _browser_data() -> dict[str, str]:
    from tests.factories import browser_session_key

    turns = _funnel_data()
    shop = turns["a0"].session.catalog.shop
    for n in range(6):  # a day's worth of turns in another shop
        session = SearchSessionFactory.create()
        _turn(session, 0, _at(_day(1), 8 + 2 * n), queued_s=n, run_s=2 + n, message=f"lamp {n}")
    return {
        "analyst": browser_session_key(_analyst()),
        "shop admin": browser_session_key(shop_admin(shop)),
        "own catalog": turns["a0"].session.catalog.name,
    }


@pytest.mark.browser
@pytest.mark.slow
def test_dashboard_in_chromium_for_analysts_and_shop_admins(
    transactional_db: None, tmp_path: Any
) -> None:
    import os
    import shutil
    from pathlib import Path

    from tests.browser import AXE_SCRIPT, CHROMIUM, axe_violations, chromium, live_server, off_loop

    if not CHROMIUM.exists() or not AXE_SCRIPT.exists():
        pytest.skip("needs Chromium and axe-core (scripts/ensure_chromium.sh)")
    keys = off_loop(_browser_data)
    with chromium() as browser, live_server() as server:
        for role in ("analyst", "shop admin"):
            for width, height in ((1440, 900), (390, 844)):
                page = browser.new_page(viewport={"width": width, "height": height})
                page.context.add_cookies(
                    [{"name": "sessionid", "value": keys[role], "url": server.url}]
                )
                answer = page.goto(server.url + reverse(DASHBOARD))
                assert answer is not None and answer.status == 200, (role, width)
                # Nothing wider than the screen: wide tables scroll inside their own box.
                assert page.evaluate("document.documentElement.scrollWidth") <= width
                charts_drawn = page.evaluate(
                    """() => [...document.querySelectorAll('img.chart')].map(i => [
                      i.id, i.complete && i.naturalWidth > 0, i.getBoundingClientRect().right])"""
                )
                assert {c[0] for c in charts_drawn} >= {"chart-funnel", "chart-e2e"}
                assert all(ok and right <= width for _, ok, right in charts_drawn), charts_drawn
                catalogs = page.locator("select[name=catalog] option").all_inner_texts()
                if role == "shop admin":
                    assert catalogs == ["all", keys["own catalog"]]
                    assert "lamp 0" not in page.content()
                else:
                    assert "lamp 0" in page.content()
                assert axe_violations(page) == [], (role, width)
                shot = tmp_path / f"dashboard-{role.replace(' ', '-')}-{width}.png"
                page.screenshot(path=str(shot), full_page=True)
                if target := os.environ.get(SHOTS_ENV):
                    shutil.copy(shot, Path(target) / shot.name)
                page.close()
