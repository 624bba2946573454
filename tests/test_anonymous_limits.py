"""Anonymous clients cannot create data without limit (issue 16, item 3).

Found: every cookieless page view wrote a session row; 50 search sessions in 1.5 s were all
created; 200 MB anonymous multipart bodies were read in full before being refused.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import zipfile
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client, override_settings
from rest_framework.test import APIClient

from dar_site.asgi import application
from retrieval.models import SearchSession
from tests.factories import (
    CatalogFactory,
    UserFactory,
    browser_session_key,
    png_bytes,
    shop_admin,
)

pytestmark = pytest.mark.django_db(transaction=True)
_addresses = itertools.count(1)
PASSWORD = "pw-for-tests-123"  # UserFactory's


def fresh_address() -> str:
    """A client address no other test used: throttle counts live in Redis across tests."""
    n = next(_addresses)
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


def test_a_page_view_stores_no_session_and_the_first_post_creates_it() -> None:
    catalog = CatalogFactory.create()
    before = Session.objects.count()
    for _ in range(5):
        page = Client().get(f"/search/{catalog.slug}/")
        assert page.status_code == 200 and "csrftoken" in page.cookies
        assert "sessionid" not in page.cookies
    assert Session.objects.count() == before and not SearchSession.objects.exists()

    # The page's own flow: POST with the CSRF cookie creates the cookie session and the search
    # session it owns (the socket opens after that).
    client = APIClient(enforce_csrf_checks=True)
    client.get(f"/search/{catalog.slug}/")
    client.credentials(HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    response = client.post("/api/search/sessions/", {"catalog": catalog.slug}, format="json")
    assert response.status_code == 201, response.content
    assert Session.objects.count() == before + 1 and "sessionid" in client.cookies


def test_anonymous_session_creation_is_throttled_per_address(
    settings: Any, redis_client: Any
) -> None:
    settings.DAR_SESSION_CREATE_RATE = "3/min"
    catalog = CatalogFactory.create()
    address = fresh_address()
    client = APIClient(REMOTE_ADDR=address)
    codes = [
        client.post("/api/search/sessions/", {"catalog": catalog.slug}, format="json").status_code
        for _ in range(3)
    ]
    assert codes == [201, 201, 201]
    refused = client.post("/api/search/sessions/", {"catalog": catalog.slug}, format="json")
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited" and "try again" in refused.json()["message"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert SearchSession.objects.count() == 3
    # A forged X-Forwarded-For does not make a new client.
    forged = client.post(
        "/api/search/sessions/",
        {"catalog": catalog.slug},
        format="json",
        HTTP_X_FORWARDED_FOR=fresh_address(),
    )
    assert forged.status_code == 429
    # Another address, and signed-in users, are not affected.
    other = APIClient(REMOTE_ADDR=fresh_address())
    assert other.post("/api/search/sessions/", {"catalog": catalog.slug}).status_code == 201
    member = APIClient(REMOTE_ADDR=address)
    member.force_login(UserFactory.create())
    assert member.post("/api/search/sessions/", {"catalog": catalog.slug}).status_code == 201
    # The counts live in the shared Redis cache, so every web process sees the same limit.
    keys = list(redis_client.scan_iter(f"{settings.REDIS_PREFIX}:cache:*{address}*"))
    assert keys, "the throttle should count in Redis"


# --- bodies over the limit are refused before they are read ----------------------------------


class AsgiCall:
    """One HTTP request straight into the ASGI application, counting the body it reads."""

    def __init__(self, method: str, path: str, headers: dict[str, str], chunks: list[bytes]):
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("10.0.0.9", 5000),
            "server": ("testserver", 80),
        }
        self.chunks = chunks
        self.read = 0
        self.messages: list[dict[str, Any]] = []
        self.done = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if self.read < len(self.chunks):
            self.read += 1
            more = self.read < len(self.chunks)
            return {"type": "http.request", "body": self.chunks[self.read - 1], "more_body": more}
        # A client that sent everything waits for the answer (Django cancels the view when it
        # hears a disconnect).
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.done.set()

    async def __call__(self) -> tuple[int, bytes]:
        await application(self.scope, self.receive, self.send)
        start = next(m for m in self.messages if m["type"] == "http.response.start")
        body = b"".join(
            m.get("body", b"") for m in self.messages if m["type"] != "http.response.start"
        )
        return int(start["status"]), body


async def test_a_declared_oversized_body_is_refused_without_reading_it() -> None:
    call = AsgiCall(
        "POST",
        "/api/search/sessions/",
        {"content-type": "multipart/form-data; boundary=x", "content-length": str(200 * 2**20)},
        [b"x" * 1024] * 4,
    )
    status, body = await call()
    assert status == 413 and call.read == 0
    assert json.loads(body)["code"] == "too_large"


async def test_a_chunked_body_is_cut_off_at_the_limit() -> None:
    chunk = b"x" * 65536
    with override_settings(DAR_MAX_REQUEST_BYTES=4 * 65536):
        call = AsgiCall(
            "POST", "/api/search/sessions/", {"content-type": "application/json"}, [chunk] * 100
        )
        status, body = await call()
    assert status == 413 and json.loads(body)["message"]
    assert call.read == 5  # the chunk that went over, and nothing after it


def multipart(fields: dict[str, tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = "dar-test-boundary"
    out = io.BytesIO()
    for name, (filename, data) in fields.items():
        out.write(f"--{boundary}\r\n".encode())
        out.write(
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode()
        )
        out.write(b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", out.getvalue()


async def test_staff_uploads_get_the_larger_limit_and_nobody_else_does() -> None:
    catalog = await sync_to_async(CatalogFactory.create)()
    staff = await sync_to_async(shop_admin)(catalog.shop, is_staff=True)
    shopper = await sync_to_async(UserFactory.create)(is_staff=False)
    staff_key = await sync_to_async(browser_session_key)(staff)
    shopper_key = await sync_to_async(browser_session_key)(shopper)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for n in range(4):
            zf.writestr(f"{n}.png", png_bytes((n * 60, 20, 20), size=48) + bytes(2048 * n))
    content_type, body = multipart({"files": ("images.zip", archive.getvalue())})
    assert len(body) > 2048
    path = f"/api/catalogs/{catalog.slug}/items/"

    async def post(cookie: str | None = None, basic: str | None = None) -> tuple[int, Any]:
        headers = {"content-type": content_type, "content-length": str(len(body))}
        if cookie:
            headers["cookie"] = f"{settings.SESSION_COOKIE_NAME}={cookie}"
        if basic:
            headers["authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
        status, answer = await AsgiCall("POST", path, headers, [body])()
        return status, json.loads(answer)

    with override_settings(DAR_MAX_REQUEST_BYTES=2048, DAR_MAX_UPLOAD_REQUEST_BYTES=10 * 2**20):
        for anybody in [
            {},
            {"cookie": shopper_key},
            {"cookie": "not-a-session"},
            {"basic": f"{staff.username}:wrong-password"},
            {"basic": f"{shopper.username}:{PASSWORD}"},
        ]:
            assert (await post(**anybody))[0] == 413, anybody
        # The shop's admin: past the body limit, Django handles the upload.
        status, report = await post(basic=f"{staff.username}:{PASSWORD}")
        assert status == 201 and len(report["imported"]) == 4, report
        # A cookie session gets the same limit (the view then asks for its CSRF token).
        status, answer = await post(cookie=staff_key)
        assert status == 403 and "CSRF" in json.dumps(answer)
        # Small bodies never need the check: the ordinary limit applies to everyone.
    assert (await post())[0] == 403
