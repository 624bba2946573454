"""The search websocket: ``/ws/search/<session_id>/``.

Client -> server: ``{"type": "message", "text": ..., "filters"?: {"set", "remove"}}`` (filters
picked with the message, as the REST API takes them), ``{"type": "feedback", "item": <id>,
"value": 1 | -1 | 0}``, ``{"type": "click", "item": <id>}`` (the shopper opened a result; only a
bad item is answered, with an error), ``{"type": "restore"}``. Server -> client: the session's
events (see retrieval/turn/payloads.py), a ``state`` event on connect and on restore, and
``error`` events for bad input, after which the socket stays open.

A shop's embedded widget (an origin some catalog allows, see dar_site/origins.py) carries no
cookie: its first frame must be ``{"type": "auth", "key": <publishable key>, "token": <session
token>}``; a wrong key, an origin the key's catalog does not allow, or a wrong token is refused like
a foreign session (an ``error`` event, then close 4403).

Another shopper's session (or a missing one) is refused at connect: the socket is accepted just
long enough to send an ``error`` event, then closed with code 4403 (forbidden) or 4404 (not found)
so the page can tell it apart from a dropped connection and stop reconnecting.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from dar_site.storable_text import unstorable_reason
from retrieval.consumer_db import run_in_pool
from retrieval.models import SearchSession
from retrieval.services import access, clicks, events, widget
from retrieval.services.errors import SearchError
from retrieval.turn import payloads, submit, sweep

CLOSE_CODES = {"forbidden": 4403, "not_found": 4404, "bad_key": 4403, "origin_not_allowed": 4403}
# A widget's socket must send its auth frame this soon after opening.
WIDGET_AUTH_TIMEOUT = 10.0
# Joining the session's group needs Redis. Right after a Redis restart a pooled connection can
# hang instead of failing; closing with 1011 after this long makes the page reconnect (on a fresh
# connection) instead of sitting on a socket that will never receive events.
GROUP_JOIN_TIMEOUT = 5.0

log = logging.getLogger(__name__)


class SearchConsumer(AsyncWebsocketConsumer):
    session: SearchSession | None = None
    group: str | None = None
    widget_origin: str | None = None
    auth_timer: asyncio.TimerHandle

    async def connect(self) -> None:
        await self.accept()
        self.widget_origin = self.scope.get("dar_widget_origin")
        if self.widget_origin:
            # A shop's widget (dar_site/origins.py let its origin through): nothing is sent until
            # it proves key and token in its first frame, and a silent socket is closed.
            self.auth_timer = asyncio.get_running_loop().call_later(
                WIDGET_AUTH_TIMEOUT, lambda: asyncio.ensure_future(self._auth_timed_out())
            )
            return
        try:
            self.session = await run_in_pool(access.session_for)(
                self.scope["url_route"]["kwargs"]["session_id"],
                self.scope.get("user"),
                _session_key(self.scope),
            )
        except SearchError as error:
            await self._send(error.as_event())
            await self.close(code=CLOSE_CODES.get(error.code, 4400))
            return
        await self._join()

    async def _join(self) -> None:
        assert self.session is not None
        group = events.group_name(self.session.pk)
        try:
            await asyncio.wait_for(
                self.channel_layer.group_add(group, self.channel_name), GROUP_JOIN_TIMEOUT
            )
        except TimeoutError:
            log.warning("channel layer did not answer joining %s; closing for a retry", group)
            await self.close(code=1011)
            return
        self.group = group
        await self._send_state()

    async def _authenticate_widget(self, text_data: str | None) -> None:
        self.auth_timer.cancel()
        assert self.widget_origin is not None  # only widget sockets authenticate
        try:
            data = _parse(text_data)
            if data.get("type") != "auth":
                raise SearchError("forbidden", 'Send {"type": "auth", "key", "token"} first.')
            self.session = await run_in_pool(_widget_session)(
                self.scope["url_route"]["kwargs"]["session_id"],
                data.get("key"),
                self.widget_origin,
                data.get("token"),
            )
        except SearchError as error:
            await self._send(error.as_event())
            await self.close(code=CLOSE_CODES.get(error.code, 4403))
            return
        await self._join()

    async def _auth_timed_out(self) -> None:
        if self.session is None:
            await self._send(SearchError("forbidden", "No auth frame was sent.").as_event())
            await self.close(code=4403)

    async def disconnect(self, code: int) -> None:
        if self.widget_origin:
            self.auth_timer.cancel()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.session is None:
            if self.widget_origin:
                await self._authenticate_widget(text_data)
            return
        try:
            await self._handle(_parse(text_data))
        except SearchError as error:
            await self._send(error.as_event())
        except Exception:
            # A bug must cost the shopper one frame, not the socket (an exception here would
            # close it with 1006 and the page would reconnect into the same failure).
            log.exception("search socket frame failed")
            await self._send(
                SearchError("server_error", "Something went wrong; please try again.").as_event()
            )

    async def _handle(self, data: dict[str, Any]) -> None:
        assert self.session is not None
        kind = data.get("type")
        if kind == "message":
            # turn.accepted reaches this socket through the session's group, like every event.
            await run_in_pool(submit.submit_message)(
                self.session,
                data.get("text"),
                address=_address(self.scope),
                filters=data.get("filters"),
                restate=data.get("restate", False),
            )
        elif kind == "feedback":
            await run_in_pool(submit.record_feedback)(
                self.session, data.get("item"), data.get("value")
            )
        elif kind == "click":
            source = "widget" if self.widget_origin else "page"
            await run_in_pool(clicks.record_click)(self.session, data.get("item"), source=source)
        elif kind == "restore":
            await self._send_state()
        else:
            raise SearchError(
                "unknown_type",
                f"Unknown message type {kind!r}: use message, feedback, click or restore.",
            )

    async def search_events(self, message: dict[str, Any]) -> None:
        for event in message["events"]:
            await self._send(event)

    async def _send_state(self) -> None:
        assert self.session is not None
        state = await run_in_pool(_state)(self.session)
        await self._send(state)

    async def _send(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(event))


def _widget_session(session_id: object, key: object, origin: str, token: object) -> SearchSession:
    catalog = widget.widget_catalog(key, origin)
    return widget.session_for(session_id, catalog, token)


def _state(session: SearchSession) -> dict[str, Any]:
    # A page that reconnects after a worker died must not wait forever on a dead turn.
    sweep.sweep_stuck_turns(session_id=session.pk)
    return payloads.state_event(session)


def _parse(text: str | None) -> dict[str, Any]:
    if text is None:
        raise SearchError("bad_json", "Send JSON text frames.")
    try:
        data = json.loads(text)
    except ValueError:
        raise SearchError("bad_json", "That was not valid JSON.") from None
    except RecursionError:
        raise SearchError("bad_json", "That JSON is nested too deeply.") from None
    if not isinstance(data, dict):
        raise SearchError("bad_json", 'Send a JSON object such as {"type": "message", ...}.')
    reason = unstorable_reason(data)
    if reason:
        raise SearchError("invalid_text", f"That frame {reason}.")
    return data


def _session_key(scope: dict[str, Any]) -> str | None:
    session = scope.get("session")
    return getattr(session, "session_key", None) if session is not None else None


def _address(scope: dict[str, Any]) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None
