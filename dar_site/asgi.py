"""ASGI entry point: HTTP through Django, websockets through Channels."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dar_site.settings")
# Django must be set up before the routing imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from retrieval.routing import websocket_urlpatterns  # noqa: E402

from .body_limit import BodyLimitMiddleware  # noqa: E402
from .origins import OriginValidatorFromSettings  # noqa: E402

# Static files come from WhiteNoise's middleware (compressed, with cache headers), everywhere.
# Oversized bodies are refused before Django's handler reads them (dar_site/body_limit.py).
http_app = BodyLimitMiddleware(django_asgi_app)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": OriginValidatorFromSettings(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
