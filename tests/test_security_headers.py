"""Security headers and deployment settings (issue 16, item 6): a Content-Security-Policy that the
pages, the admin and Swagger UI live with, `check --deploy` clean with the production settings,
and path traversal under /static/ answered with a 4xx, never a 500.
"""

from __future__ import annotations

import http.client
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.browser import (
    CHROMIUM,
    chromium,
    live_server,
    off_loop,
    open_stored_search,
)
from tests.factories import CatalogFactory, CatalogItemFactory, SearchSessionFactory, UserFactory

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_every_page_carries_a_strict_content_security_policy() -> None:
    catalog = CatalogFactory.create()
    admin = UserFactory.create(is_superuser=True)
    staff = Client()
    staff.force_login(admin)
    for client, path in [
        (Client(), "/"),
        (Client(), f"/search/{catalog.slug}/"),
        (Client(), "/admin/login/"),
        (staff, "/admin/"),
        (staff, "/api/docs/"),
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        policy = response["Content-Security-Policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
        assert directives["default-src"] == "'self'", policy
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def _check_deploy(**env: str) -> subprocess.CompletedProcess[str]:
    """`manage.py check --deploy` with the production settings (DJANGO_DEBUG off, no test
    defaults); the database and Redis URLs are given so that nothing embedded starts."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DAR_"))}
    clean.update(
        DJANGO_SETTINGS_MODULE="dar_site.settings",
        # Explicit, so that a local .env (make demo writes DJANGO_DEBUG=1) cannot turn it on.
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL="postgresql://dar:unused@127.0.0.1:1/dar",
        REDIS_URL="redis://127.0.0.1:1/0",
        DAR_RUN_DIR=str(ROOT / ".run" / "check-deploy"),
        **env,
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_with_the_production_settings() -> None:
    result = _check_deploy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    # Development over plain HTTP (secure cookies off) turns the HTTPS settings off with them.
    dev = _check_deploy(DJANGO_SECURE_COOKIES="0")
    assert "security.W008" in dev.stderr + dev.stdout and "security.W004" in dev.stderr + dev.stdout


@pytest.mark.django_db(transaction=True)
def test_static_path_traversal_gets_a_4xx_not_a_500() -> None:
    paths = [
        "/static/../x",
        "/static/../../manage.py",
        "/static/retrieval/../../manage.py",
        "/static/..%2f..%2fmanage.py",
        "/static/%2e%2e/%2e%2e/manage.py",
        "/static/..%5c..%5cmanage.py",
        "/static/%00",
        "/static//etc/passwd",
        "/media/../manage.py",
    ]
    with live_server() as server:
        for path in paths:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.putrequest("GET", path, skip_accept_encoding=True)  # sent as is, not normalised
            conn.endheaders()
            response = conn.getresponse()
            body = response.read()
            assert 400 <= response.status < 500, (path, response.status, body[:200])
            assert b"import" not in body, path  # manage.py never comes back
            conn.close()


# --- in Chromium: no CSP violation on the pages people use --------------------------------


def _watch_violations(page: Any) -> list[str]:
    found: list[str] = []
    page.on(
        "console",
        lambda msg: found.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.on("pageerror", lambda error: found.append(f"page error: {error}"))
    return found


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")
@pytest.mark.django_db(transaction=True)
def test_the_search_page_admin_and_swagger_work_under_the_policy() -> None:
    with live_server() as server, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        violations = _watch_violations(page)
        # The shopper page: stored results (media images), the socket, a message sent.
        open_stored_search(page, server)
        page.fill("#message", "in green please")
        page.press("#message", "Enter")
        page.wait_for_selector("#connection[data-state='open']")
        assert page.locator("#results .result-card img").first.evaluate("i => i.naturalWidth") > 0
        assert not violations, violations

        # The admin, signed in: the catalog page with its progress script, the items with their
        # thumbnails, the analysts' session list and dashboard.
        from tests.factories import browser_session_key

        def admin_data() -> tuple[str, int]:
            admin = UserFactory.create(is_superuser=True)
            catalog = CatalogFactory.create()
            CatalogItemFactory.create(catalog=catalog)
            SearchSessionFactory.create(catalog=catalog, session_key="k")
            return browser_session_key(admin), catalog.pk

        key, catalog_id = off_loop(admin_data)
        admin_page = browser.new_page()
        admin_violations = _watch_violations(admin_page)
        admin_page.context.add_cookies([{"name": "sessionid", "value": key, "url": server.url}])
        for path in [
            "/admin/",
            f"/admin/catalog/catalog/{catalog_id}/change/",
            f"/admin/catalog/catalog/{catalog_id}/upload/",
            "/admin/catalog/catalogitem/",
            "/admin/retrieval/searchsession/",
            "/admin/retrieval/searchsession/dashboard/",
        ]:
            response = admin_page.goto(server.url + path)
            assert response is not None and response.status == 200, path
            admin_page.wait_for_load_state("networkidle")
        # progress.js ran: it fills the catalog's progress counts.
        admin_page.goto(f"{server.url}/admin/catalog/catalog/{catalog_id}/change/")
        admin_page.wait_for_load_state("networkidle")
        assert not admin_violations, admin_violations

        # Swagger UI from drf-spectacular-sidecar: it renders the API's operations.
        admin_page.goto(f"{server.url}/api/docs/")
        admin_page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
        admin_page.screenshot(path=str(ROOT / ".run" / "csp-swagger.png"))
        assert not admin_violations, admin_violations
