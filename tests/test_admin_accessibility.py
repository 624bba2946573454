"""axe-core on the admin pages this project adds or changes: no serious or critical violations.

Django's own admin pages (the index, plain change lists) are Django's; the pages checked here are
our templates and our columns: the search dashboard, the sessions list and a session, the catalog
page (search link, live progress) and its upload page, the item list with editable titles.
"""

from __future__ import annotations

from django.urls import reverse

from tests.browser import (
    AXE_BROWSER_MARKS,
    axe_violations,
    chromium,
    live_server,
    off_loop,
)
from tests.factories import (
    CatalogItemFactory,
    TurnResultFactory,
    UserFactory,
    browser_session_key,
)

pytestmark = AXE_BROWSER_MARKS


def _data() -> tuple[str, list[str]]:
    result = TurnResultFactory.create()
    turn = result.turn
    turn.timings = {"text": 100.0, "total": 900.0}
    turn.save()
    catalog = turn.session.catalog
    CatalogItemFactory.create(catalog=catalog)
    admin = UserFactory.create(is_staff=True, is_superuser=True)
    pages = [
        reverse("admin:retrieval_searchsession_dashboard"),
        reverse("admin:retrieval_searchsession_changelist"),
        reverse("admin:retrieval_searchsession_change", args=[turn.session_id]),
        reverse("admin:catalog_catalog_change", args=[catalog.pk]),
        reverse("admin:catalog_catalog_upload", args=[catalog.pk]),
        reverse("admin:catalog_catalog_rotate_key", args=[catalog.pk]),
        reverse("admin:catalog_catalogitem_changelist"),
    ]
    return browser_session_key(admin), pages


def test_our_admin_pages_have_no_serious_accessibility_violations(transactional_db: None) -> None:
    key, pages = off_loop(_data)
    with chromium() as browser, live_server() as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.context.add_cookies([{"name": "sessionid", "value": key, "url": server.url}])
        found: dict[str, list[str]] = {}
        for path in pages:
            answer = page.goto(server.url + path)
            assert answer is not None and answer.status == 200, path
            if violations := axe_violations(page):
                found[path] = violations
        assert found == {}
