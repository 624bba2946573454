"""Websocket origin validation: a page on another site must not drive a shopper's session."""

from __future__ import annotations

from typing import Any

from channels.security.websocket import OriginValidator
from django.conf import settings


class OriginValidatorFromSettings(OriginValidator):
    """Allow the origins named in DAR_WEBSOCKET_ALLOWED_ORIGINS, else those of ALLOWED_HOSTS."""

    def __init__(self, application: Any) -> None:
        allowed = list(settings.DAR_WEBSOCKET_ALLOWED_ORIGINS) or list(settings.ALLOWED_HOSTS)
        super().__init__(application, allowed)
