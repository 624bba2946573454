"""Search sessions of a shop's embedded widget (static/retrieval/embed.js), on the shop's site.

The widget cannot use our cookies (browsers block them on other sites, and a cookie would let any
page that can reach us act for the shopper), so it authenticates each request with
- the catalog's publishable key (header ``X-Dar-Key``, or the socket's ``auth`` frame),
- the browser's ``Origin``, which must be one of that catalog's allowed origins exactly, and
- for an existing session, the session token handed out once when the session was created
  (header ``X-Dar-Session-Token``). Only the token's keyed hash is stored, in the same column that
  holds an anonymous page's hashed cookie key, so every ownership check works unchanged.
Widget sessions are anonymous: the catalog must be public, and new sessions are rate-limited per
client address besides the usual per-session and per-address turn limits.
"""

from __future__ import annotations

import secrets

from django.contrib.auth.models import AnonymousUser

from catalog.models import Catalog
from catalog.services import embed
from retrieval.models import SearchSession

from . import access, ratelimit, sessions
from .errors import SearchError

KEY_HEADER = "X-Dar-Key"
TOKEN_HEADER = "X-Dar-Session-Token"  # noqa: S105  (a header name)


def widget_catalog(key: object, origin: str | None) -> Catalog:
    """The catalog this key names, if the page's origin is one it allows; else a clear refusal."""
    catalog = embed.catalog_for_key(key)
    if catalog is None:
        raise SearchError(
            "bad_key",
            "This search widget's key is not valid (it may have been rotated): copy the current "
            "snippet from the catalog's admin page.",
        )
    if origin is None:
        raise SearchError(
            "origin_not_allowed",
            "The search widget only works from a web page: the request had no Origin.",
        )
    if not embed.allows(catalog, origin):
        raise SearchError(
            "origin_not_allowed",
            f"{origin} may not embed this catalog's search: add this exact origin (scheme, host "
            "and port) to the catalog's allowed origins.",
        )
    if not catalog.is_public:
        raise SearchError("forbidden", "Only a public catalog can be searched from a widget.")
    return catalog


def start_session(catalog: Catalog, address: str | None) -> tuple[SearchSession, str]:
    """A new anonymous session of the widget, and the token that owns it (given out only here)."""
    ratelimit.check_widget_session_allowed(address)
    token = secrets.token_urlsafe(32)
    return sessions.create_session(catalog, AnonymousUser(), token), token


def session_for(session_id: object, catalog: Catalog, token: object) -> SearchSession:
    """The session this token owns, in the key's catalog."""
    session = access.session_for(session_id, None, token if isinstance(token, str) else None)
    if session.catalog_id != catalog.pk:
        raise SearchError("forbidden", "This search session belongs to another catalog.")
    return session
