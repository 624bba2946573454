"""The shopper pages rendered by Django: catalog list and search page (no browser needed)."""

from __future__ import annotations

import json
import re

import pytest
from django.conf import settings
from django.test import Client

from tests.factories import CatalogFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_catalog_list_shows_public_catalogs_only() -> None:
    public = CatalogFactory.create(name="Summer shoes")
    private = CatalogFactory.create(name="Secret stock", is_public=False)
    page = Client().get("/")
    assert page.status_code == 200
    html = page.content.decode()
    assert public.name in html and f"/search/{public.slug}/" in html
    assert private.name not in html

    admin = UserFactory.create(is_staff=False)
    private.shop.admins.add(admin)
    client = Client()
    client.force_login(admin)
    assert private.name in client.get("/").content.decode()


def test_search_page_carries_its_config_csrf_cookie_and_stand_in_notice() -> None:
    catalog = CatalogFactory.create()
    client = Client()
    page = client.get(f"/search/{catalog.slug}/")
    assert page.status_code == 200
    # The CSRF cookie, but no session row: that waits for the first POST (test_anonymous_limits).
    assert "csrftoken" in page.cookies and settings.SESSION_COOKIE_NAME not in client.cookies
    html = page.content.decode()
    start = html.index('<script id="search-config" type="application/json">')
    config = json.loads(html[start:].split(">", 1)[1].split("</script>", 1)[0])
    assert config["catalog"] == catalog.slug
    assert config["socketPath"] == "/ws/search/SESSION/"
    # The test suite runs the offline profile: the page must say results come from stand-ins.
    assert 'id="stand-in-notice"' in html
    assert "retrieval/search.js" in html and "retrieval/search.css" in html
    # Before the first message there is no session to be connected to: nothing has failed yet.
    assert '<span class="connection-label">Ready</span>' in html
    assert "not connected" not in html


def _icon_links(html: str) -> list[str]:
    return re.findall(r'<link rel="icon" href="([^"]+)"', html)


def test_the_pages_name_an_icon_that_the_static_files_serve() -> None:
    catalog = CatalogFactory.create()
    client = Client()
    for path in (f"/search/{catalog.slug}/", "/", "/admin/login/"):
        icons = _icon_links(client.get(path).content.decode())
        assert len(icons) == 2, path  # the SVG, and a PNG for browsers without SVG icons
        for href in icons:
            answer = client.get(href)
            assert answer.status_code == 200, href
            assert answer["Content-Type"] in ("image/svg+xml", "image/png"), href
    # Where a page names none, browsers ask for /favicon.ico: it leads to the same icon.
    answer = client.get("/favicon.ico", follow=True)
    assert answer.status_code == 200 and answer["Content-Type"] == "image/png"


def test_private_or_unknown_catalog_page_is_404() -> None:
    private = CatalogFactory.create(is_public=False)
    assert Client().get(f"/search/{private.slug}/").status_code == 404
    assert Client().get("/search/no-such-catalog/").status_code == 404
