"""CORS for shops' embedded widgets, on the search API only (``/api/search/``).

A browser asks first (the preflight: ``OPTIONS`` with ``Access-Control-Request-Method``) and
carries no key then, so a preflight is answered for origins that some catalog allows exactly
(catalog.services.embed.origin_listed); the request itself is then checked against its key's
catalog (retrieval/services/widget.py), and the answer, refusals included, carries
``Access-Control-Allow-Origin`` for such origins so the widget can read why. Any other origin gets
no CORS header at all, so its browser keeps the answer from the page. No credentials are allowed:
the widget sends no cookie.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .origin_names import origin_or_none

PREFIX = "/api/search/"
ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Content-Type, X-Dar-Key, X-Dar-Session-Token"
MAX_AGE = "600"


def _listed(origin: str) -> bool:
    from catalog.services.embed import origin_listed

    return origin_listed(origin)


class WidgetCorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw = request.META.get("HTTP_ORIGIN")
        if not raw or not request.path.startswith(PREFIX):
            return self.get_response(request)
        origin = origin_or_none(raw)
        allowed = origin is not None and _listed(origin)
        preflight = request.method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in (
            request.META
        )
        if preflight:
            if not allowed:
                return _refused(raw)
            response = HttpResponse(status=204, content_type="text/plain")
            response["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response["Access-Control-Max-Age"] = MAX_AGE
        else:
            response = self.get_response(request)
        if allowed:
            assert origin is not None
            response["Access-Control-Allow-Origin"] = origin
        # Caches must keep answers for different origins apart.
        vary = response.get("Vary")
        response["Vary"] = f"{vary}, Origin" if vary else "Origin"
        return response


def _refused(origin: str) -> HttpResponse:
    body = {
        "code": "origin_not_allowed",
        "message": f"{origin} may not use this search: no catalog allows this exact origin.",
    }
    return HttpResponse(json.dumps(body), status=403, content_type="application/json")
