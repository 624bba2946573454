"""ASGI entry point: HTTP through Django, websockets through Channels."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dar_site.settings")
# Django must be set up before the routing imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from retrieval.routing import websocket_urlpatterns  # noqa: E402

from .origins import OriginValidatorFromSettings  # noqa: E402

# Small installs (and the demo) serve /static/ from this process; a production deployment behind
# a web server can set DAR_SERVE_STATIC=0 and serve collectstatic's output instead.
http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": OriginValidatorFromSettings(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
