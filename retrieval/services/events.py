"""Websocket notifications: every event for a search session goes through here.

Events are plain JSON dicts with a ``type`` and the ``turn`` index; the consumer forwards them to
the socket unchanged. They are sent through the Channels layer (Redis), so a worker process can
notify pages served by any web process.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def group_name(session_id: object) -> str:
    return f"search.{session_id}"


def emit(session_id: object, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            group_name(session_id), {"type": "search.event", "event": event}
        )
    except Exception:
        # A notification lost to a Redis hiccup must not fail the turn: the page restores the
        # session from the database when it reconnects.
        log.exception("could not emit %s for session %s", event.get("type"), session_id)
