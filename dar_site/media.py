"""Media (catalog renditions, previews) behind signed URLs, on the local disk or an object store.

Nothing under MEDIA_ROOT is reachable by its path alone: ``SignedFileSystemStorage.url`` adds an
expiry and an HMAC (keyed with SECRET_KEY) to every URL it hands out, and ``serve_signed`` answers
only URLs it signed. So a private catalog's images and a shopper's previews reach only the pages
and API answers that were allowed to show them, and only for ``DAR_MEDIA_URL_MAX_AGE`` seconds.
Names are keyed hashes, not the images' sha256 (``catalog.models.media_token``).

In production the file never streams through Python: with ``DAR_MEDIA_ACCEL_REDIRECT`` set (nginx
``internal`` location), the checked request is answered by an ``X-Accel-Redirect`` header and the
web server sends the file; with ``DAR_MEDIA_STORAGE=s3`` the URLs are the object store's own
presigned URLs (django-storages, ``querystring_auth``) and Django is not on the path at all.

Expiry times are rounded up to a window of a quarter of the maximum age, so the URL of an image
stays the same for a while and browsers cache it.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import time
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseForbidden
from django.http.response import HttpResponseBase
from django.utils._os import safe_join
from django.utils.encoding import filepath_to_uri
from django.views.decorators.http import require_GET


def _signature(name: str, expires: int) -> str:
    key = hashlib.sha256(b"dar.media|" + settings.SECRET_KEY.encode()).digest()
    return hmac.new(key, f"{name}|{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def _expiry(now: float | None = None) -> int:
    max_age = int(settings.DAR_MEDIA_URL_MAX_AGE)
    window = max(1, max_age // 4)
    at = int(now if now is not None else time.time()) + max_age
    return (at // window + 1) * window


def signed_query(name: str, now: float | None = None) -> str:
    expires = _expiry(now)
    return urlencode({"e": expires, "s": _signature(name, expires)})


def check(name: str, expires: str, signature: str, now: float | None = None) -> bool:
    try:
        when = int(expires)
    except ValueError:
        return False
    if when < (now if now is not None else time.time()):
        return False
    return hmac.compare_digest(_signature(name, when), signature)


class SignedFileSystemStorage(FileSystemStorage):
    """The local media storage whose URLs carry an expiry and a signature."""

    def url(self, name: str | None) -> str:
        if name is None:
            raise ValueError("no file name")
        base = super().url(name)
        return f"{base}?{signed_query(filepath_to_uri(name))}"


@require_GET
def serve_signed(request: HttpRequest, path: str) -> HttpResponseBase:
    """A media file for a URL ``SignedFileSystemStorage.url`` made, and nothing else."""
    name = filepath_to_uri(path)
    if not check(name, request.GET.get("e", ""), request.GET.get("s", "")):
        return HttpResponseForbidden("This media link is invalid or has expired.")
    try:
        full = safe_join(str(settings.MEDIA_ROOT), path)
    except Exception:  # a path that leaves MEDIA_ROOT (SuspiciousFileOperation)
        raise Http404("no such file") from None
    accel = str(settings.DAR_MEDIA_ACCEL_REDIRECT)
    headers: dict[str, Any] = {
        # The URL is the authorisation: shared caches must not keep it past its expiry.
        "Cache-Control": f"private, max-age={int(settings.DAR_MEDIA_URL_MAX_AGE) // 4}",
        "X-Content-Type-Options": "nosniff",
    }
    if accel:
        response = HttpResponse(headers=headers)
        response["X-Accel-Redirect"] = accel.rstrip("/") + "/" + filepath_to_uri(path)
        response["Content-Type"] = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return response
    try:
        handle = open(full, "rb")  # noqa: SIM115  (FileResponse closes it)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise Http404("no such file") from None
    streamed = FileResponse(handle)
    for key, value in headers.items():
        streamed[key] = value
    return streamed
