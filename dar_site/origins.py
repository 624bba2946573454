"""The websocket Origin check: a page on another site must not drive a shopper's session.

Origins match exactly: scheme, host and port (``dar_site/origin_names.py`` normalises them). A
handshake is let through when its ``Origin`` is
- the page's own origin: the socket's scheme (``wss`` = ``https``, or the trusted TLS proxy's
  header) with the request's ``Host``, that host being one of ``ALLOWED_HOSTS``. Without a
  ``Host`` header (some test clients) the allowed hosts on the scheme's default port count;
- one of ``DAR_WEBSOCKET_ALLOWED_ORIGINS`` (exact origins);
- an origin some catalog allows for its embedded widget: ``scope["dar_widget_origin"]`` is then
  set, and the consumer requires the widget's key (whose catalog must list this very origin) and
  the session's token before it sends anything.
Everything else is refused at the handshake (HTTP 403), as Channels' own validator does. A
missing or ``null`` Origin is refused too.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from .origin_names import SOCKET_SCHEMES, origin_or_none


def own_origins(scheme: str, host_header: str | None) -> set[str]:
    """The origin of our own pages for a request with this scheme and ``Host`` header."""
    web_scheme = SOCKET_SCHEMES.get(scheme, "http")
    allowed = settings.ALLOWED_HOSTS
    if host_header:
        domain, _port = split_domain_port(host_header.strip())
        if not domain or not validate_host(domain, allowed):
            return set()
        mine = origin_or_none(f"{web_scheme}://{host_header.strip()}")
        return {mine} if mine else set()
    found = set()
    for host in allowed:
        if host and not host.startswith(".") and "*" not in host:
            origin = origin_or_none(f"{web_scheme}://{host}")
            if origin:
                found.add(origin)
    return found


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin1")
    return None


def request_scheme(scope: dict[str, Any]) -> str:
    """The scheme the browser used; a proxy's header counts only when the settings trust it."""
    scheme = str(scope.get("scheme") or "ws")
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        name, expected = proxy
        header = name.lower().removeprefix("http_").replace("_", "-").encode()
        if _header(scope, header) == expected:
            return "https"
    return scheme


def first_party(scope: dict[str, Any], origin: str) -> bool:
    """Whether ``origin`` is our own page's origin or one configured for the whole instance."""
    if origin in settings.DAR_WEBSOCKET_ALLOWED_ORIGINS:
        return True
    return origin in own_origins(request_scheme(scope), _header(scope, b"host"))


def _listed_by_a_catalog(origin: str) -> bool:
    from catalog.services.embed import origin_listed

    return origin_listed(origin)


class OriginValidatorFromSettings:
    """ASGI middleware: websocket handshakes from origins not allowed above are refused."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.application(scope, receive, send)
        origin = origin_or_none(_header(scope, b"origin"))
        if origin is not None and first_party(scope, origin):
            return await self.application(scope, receive, send)
        if origin is not None and await database_sync_to_async(_listed_by_a_catalog)(origin):
            return await self.application(dict(scope, dar_widget_origin=origin), receive, send)
        return await WebsocketDenier()(scope, receive, send)
