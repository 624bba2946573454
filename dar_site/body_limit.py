"""Request bodies over a size limit are refused (413) before they are read: an ASGI middleware.

Django's ASGI handler reads the whole body (spooling it to disk) before any Django middleware or
view runs, so an anonymous 200 MB multipart post used to be read in full just to be refused. Here
a declared ``Content-Length`` over the limit is answered at once, without reading a byte; a body
without one (chunked) is counted as it streams in and cut off at the limit.

Two limits: ``DAR_MAX_REQUEST_BYTES`` for everything, and ``DAR_MAX_UPLOAD_REQUEST_BYTES`` for the
catalog upload endpoints (the admin's upload page, the REST items endpoint), granted only to a
request that proves to be from active staff: a staff session cookie, or HTTP Basic credentials of
a staff user (checked through ``authenticate``, so django-axes counts wrong passwords here too).
(The ASGI server buffers nothing itself with uvicorn; daphne reads the body before any app runs.)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

Scope = dict[str, Any]
Message = Any  # a mapping: ASGI messages
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The catalog upload endpoints (catalog/admin.py upload_view, catalog/api_urls.py items).
UPLOAD_PATHS = re.compile(r"^/(admin/catalog/catalog/[^/]+/upload|api/catalogs/[^/]+/items)/$")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _declared_length(headers: dict[str, str]) -> int | None:
    value = headers.get("content-length", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _is_staff(headers: dict[str, str], scope: Scope) -> bool:
    """Whether the request's session cookie or Basic credentials are an active staff user's."""
    from django.db import close_old_connections

    try:
        return _credentials_are_staff(headers, scope)
    finally:
        # Outside Django's request cycle nothing else closes what this opened (CONN_MAX_AGE).
        close_old_connections()


def _credentials_are_staff(headers: dict[str, str], scope: Scope) -> bool:
    from django.contrib.auth import authenticate, get_user
    from django.contrib.sessions.backends.base import SessionBase
    from django.http import HttpRequest, parse_cookie
    from django.utils.module_loading import import_string

    request = HttpRequest()
    request.method = scope.get("method", "POST")
    request.path = request.path_info = scope.get("path", "")
    client = scope.get("client")
    request.META = {
        "REMOTE_ADDR": client[0] if client else "",
        "HTTP_USER_AGENT": headers.get("user-agent", ""),
        "PATH_INFO": request.path,
    }
    key = parse_cookie(headers.get("cookie", "")).get(settings.SESSION_COOKIE_NAME)
    if key:
        store: SessionBase = import_string(settings.SESSION_ENGINE + ".SessionStore")(key)
        request.session = store
        user: Any = get_user(request)
        if user.is_active and user.is_staff:
            return True
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            username, _, password = base64.b64decode(credentials).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user = authenticate(request, username=username, password=password)
        return bool(user is not None and user.is_active and user.is_staff)
    return False


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        declared = _declared_length(headers)
        limit = int(settings.DAR_MAX_REQUEST_BYTES)
        upload_limit = int(settings.DAR_MAX_UPLOAD_REQUEST_BYTES)
        # Only a body that needs the upload limit pays for the staff check.
        needs_more = declared is None or declared > limit
        upload = needs_more and UPLOAD_PATHS.match(scope.get("path", ""))
        if upload and await sync_to_async(_is_staff)(headers, scope):
            limit = upload_limit
        if declared is not None and declared > limit:
            await _refuse(send, limit)
            return

        received = 0
        over = False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Django's handler takes a disconnect while reading as an aborted request and
                    # answers nothing; the 413 is sent below.
                    over = True
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, tracking_send)
        if over and not started:
            await _refuse(send, limit)


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "code": "too_large",
            "message": f"The request body is larger than this endpoint accepts ({limit:,} bytes).",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
