"""REST API for clients without websockets: the same operations as the search socket.

Poll ``GET .../turns/<index>/`` (or the session) to follow a turn. Anonymous shoppers may use
public catalogs; their sessions belong to their Django session cookie, so every unsafe request
needs the CSRF token, signed in or not (HTTP Basic clients carry no cookie and are exempt).
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from drf_spectacular.authentication import SessionScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import (
    BaseAuthentication,
    BasicAuthentication,
    SessionAuthentication,
)
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.models import Catalog
from dar_site.origin_names import origin_or_none
from retrieval.api_schema import (
    CSRF_HINT,
    FILTERS_EXAMPLE,
    MESSAGE_EXAMPLE,
    WIDGET_HINT,
    ClickOut,
    FeedbackOut,
    FiltersChangeOut,
    SessionOut,
    TurnOut,
    errors,
)
from retrieval.models import SearchSession
from retrieval.services import access, clicks, sessions, widget
from retrieval.services.errors import SearchError
from retrieval.throttles import SessionCreateThrottle
from retrieval.turn import payloads, submit, sweep


class ShopperSessionAuthentication(SessionAuthentication):
    """Session auth that also checks CSRF for anonymous shoppers: their cookie owns sessions."""

    def authenticate(self, request: Request) -> Any:
        result = super().authenticate(request)
        if result is None:
            self.enforce_csrf(request)
        return result

    def enforce_csrf(self, request: Request) -> None:
        try:
            super().enforce_csrf(request)
        except exceptions.PermissionDenied as denied:
            # Django's reason ("CSRF cookie not set.") alone does not say how to get one.
            raise exceptions.PermissionDenied(
                {"code": "csrf_failed", "message": f"{denied.detail} {CSRF_HINT}"}
            ) from None


class WidgetClient:
    """``request.auth`` of a shop's embedded widget: the key's catalog and the page's origin."""

    def __init__(self, catalog: Catalog, origin: str, token: str | None) -> None:
        self.catalog = catalog
        self.origin = origin
        self.token = token


class WidgetAuthentication(BaseAuthentication):
    """Requests carrying ``X-Dar-Key`` come from an embedded widget (retrieval/services/widget.py):
    key and Origin are checked here, cookies are ignored, and no CSRF token is needed because no
    cookie is trusted. Without the header, the other authentications apply."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, WidgetClient] | None:
        key = request.META.get("HTTP_X_DAR_KEY")
        if key is None:
            return None
        origin = origin_or_none(request.META.get("HTTP_ORIGIN"))
        try:
            catalog = widget.widget_catalog(key, origin)
        except SearchError as refused:
            raise exceptions.PermissionDenied(
                {"code": refused.code, "message": refused.message}
            ) from None
        assert origin is not None  # widget_catalog refuses requests without one
        return AnonymousUser(), WidgetClient(
            catalog, origin, request.META.get("HTTP_X_DAR_SESSION_TOKEN")
        )


class WidgetScheme(OpenApiAuthenticationExtension):
    """Documents the widget's publishable key header (drf-spectacular)."""

    target_class = "retrieval.api.WidgetAuthentication"
    name = "widgetKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": widget.KEY_HEADER,
            "description": WIDGET_HINT,
        }


class ShopperSessionScheme(SessionScheme):
    """Documents ShopperSessionAuthentication as the cookie auth it is (drf-spectacular)."""

    target_class = "retrieval.api.ShopperSessionAuthentication"
    name = "shopperCookieAuth"


class SessionIn(serializers.Serializer):
    catalog = serializers.CharField(help_text="Catalog slug (or id).")


FILTERS_HELP = (
    'Filters to pick or remove: {"set": [filter, ...], "remove": [key, ...]}. A filter is '
    '{"key": "price", "min": 20, "max": 40, "currency": "EUR"} (min, max or both; currency one of '
    'the catalog\'s, its main one by default), {"key": "availability", "values": ["in_stock"]}, '
    'or {"key": "brand" | "category" | <attribute>, "values": [...]} with values the catalog has '
    "(case and accents ignored). A picked filter holds until a later message says otherwise; a "
    "removed one stays off until a later message says it again. Anything else is a 400 "
    "(bad_filter)."
)


class FilterChangeIn(serializers.Serializer):
    set = serializers.ListField(
        child=serializers.DictField(), required=False, help_text="Filters to pick."
    )
    remove = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Filter keys to remove."
    )


class MessageIn(serializers.Serializer):
    text = serializers.CharField()
    filters = FilterChangeIn(required=False, help_text=FILTERS_HELP)
    restate = serializers.BooleanField(
        required=False,
        default=False,
        help_text="True when the text is the shopper's rewrite of the turn's refined description "
        "('what I understood'): the dialogue starts again from it.",
    )


class FeedbackIn(serializers.Serializer):
    item = serializers.IntegerField()
    value = serializers.ChoiceField(choices=[1, -1, 0], help_text="1 like, -1 dislike, 0 undo.")


class ClickIn(serializers.Serializer):
    item = serializers.IntegerField(help_text="Id of a result item this session was shown.")
    # DRF's metaclass takes declared fields out of the class, so this does not shadow
    # Field.source at run time; mypy only sees the class attribute.
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=["page", "widget"],
        required=False,
        help_text="Where the result was opened: the search page (default) or an embedded widget.",
    )


class SearchAPIView(APIView):
    # The widget's key comes first: a widget request never falls back to a cookie.
    authentication_classes = [
        WidgetAuthentication,
        BasicAuthentication,
        ShopperSessionAuthentication,
    ]
    # Access is decided per catalog and per session by retrieval.services.access.
    permission_classes = [AllowAny]

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, SearchError):
            headers = {} if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
            return Response(exc.as_body(), status=exc.http_status, headers=headers)
        if isinstance(exc, exceptions.ParseError):
            # Unparsable JSON, a NUL or a lone surrogate in the body: the one error shape too.
            return Response(
                {"code": "invalid", "message": str(exc.detail)}, status=status.HTTP_400_BAD_REQUEST
            )
        if isinstance(exc, exceptions.Throttled):
            wait = max(1, math.ceil(getattr(exc, "wait", None) or 1))
            return Response(
                {
                    "code": "rate_limited",
                    "message": f"Too many new searches from this address; try again in {wait} s.",
                },
                status=status.HTTP_429_TOO_MANY_REQUESTS,
                headers={"Retry-After": str(wait)},
            )
        return super().handle_exception(exc)

    def body(self, request: Request) -> dict[str, Any]:
        data: Any = request.data
        if not hasattr(data, "get"):
            raise SearchError("invalid", "Send a JSON object.")
        return dict(data.items())

    def owned_session(self, request: Request, session_id: Any) -> SearchSession:
        client = request.auth
        if isinstance(client, WidgetClient):
            return widget.session_for(session_id, client.catalog, client.token)
        return access.session_for(session_id, request.user, request.session.session_key)


class SessionCreateView(SearchAPIView):
    throttle_classes = [SessionCreateThrottle]

    @extend_schema(
        summary="Start a search session in a catalog",
        description="The session belongs to the signed-in user, else to the client's cookie "
        "session. " + CSRF_HINT + " " + WIDGET_HINT,
        request=SessionIn,
        responses={201: SessionOut, **errors(400, 403, 404, 429)},
    )
    def post(self, request: Request) -> Response:
        client = request.auth
        body = self.body(request)
        if isinstance(client, WidgetClient):
            # The key names the catalog; the token is the session's owner, given out only here.
            session, token = widget.start_session(client.catalog, request.META.get("REMOTE_ADDR"))
            body = {
                **payloads.session_payload(session),
                "token": token,
                "max_chars": settings.DAR_MAX_MESSAGE_CHARS,
            }
            return Response(body, status=status.HTTP_201_CREATED)
        catalog = sessions.catalog_for(body.get("catalog"), request.user)
        if not request.user.is_authenticated and not request.session.session_key:
            request.session.save()  # anonymous ownership needs a session key
        session = sessions.create_session(catalog, request.user, request.session.session_key)
        return Response(payloads.session_payload(session), status=status.HTTP_201_CREATED)


class SessionDetailView(SearchAPIView):
    @extend_schema(
        summary="A session with all its turns and feedback",
        responses={200: SessionOut, **errors(403, 404)},
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = self.owned_session(request, session_id)
        sweep.sweep_stuck_turns(session_id=session.pk)
        return Response(payloads.session_payload(session))


class MessageView(SearchAPIView):
    @extend_schema(
        summary="Send a message: starts the session's next turn",
        description="Answers at once with the queued turn; poll the turn (or the session) until "
        "its status is done or failed. One turn at a time is best: a message sent while a turn "
        "runs is queued behind it. While the turn waits for a search worker behind other "
        "shoppers' turns, its ``queue`` says where (position, expected wait). When too many "
        "turns wait already the message is refused with 503 and a Retry-After header; nothing "
        "is stored, send it again then.",
        request=MessageIn,
        examples=[MESSAGE_EXAMPLE],
        responses={202: TurnOut, **errors(400, 403, 404, 409, 429, 503)},
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = self.owned_session(request, session_id)
        body = self.body(request)
        turn = submit.submit_message(
            session,
            body.get("text"),
            address=request.META.get("REMOTE_ADDR"),
            filters=body.get("filters"),
            restate=body.get("restate", False),
        )
        return Response(payloads.turn_payload(turn), status=status.HTTP_202_ACCEPTED)


class FiltersView(SearchAPIView):
    @extend_schema(
        summary="Pick or remove filters (chips): the latest message is searched again with them",
        description=FILTERS_HELP + " The latest message is searched again at once as the "
        "session's next turn (answered with 202 and that turn; poll it like a message's); before "
        "the first message the filters are kept for it (200, turn null).",
        request=FilterChangeIn,
        examples=[FILTERS_EXAMPLE],
        responses={
            200: FiltersChangeOut,
            202: FiltersChangeOut,
            **errors(400, 403, 404, 409, 429, 503),
        },
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = self.owned_session(request, session_id)
        state, turn = submit.change_filters(
            session, self.body(request), address=request.META.get("REMOTE_ADDR")
        )
        body = {"filters": state, "turn": None if turn is None else payloads.turn_payload(turn)}
        started = status.HTTP_200_OK if turn is None else status.HTTP_202_ACCEPTED
        return Response(body, status=started)


class TurnView(SearchAPIView):
    @extend_schema(
        summary="One turn: its status, refined description, previews and results",
        responses={200: TurnOut, **errors(403, 404)},
    )
    def get(self, request: Request, session_id: str, index: int) -> Response:
        session = self.owned_session(request, session_id)
        sweep.sweep_stuck_turns(session_id=session.pk)
        turn = session.turns.filter(index=index).first()
        if turn is None:
            raise SearchError("not_found", f"This session has no turn {index}.")
        return Response(payloads.turn_payload(turn))


class FeedbackView(SearchAPIView):
    @extend_schema(
        summary="Like or dislike a result (steers the next turn)",
        request=FeedbackIn,
        responses={200: FeedbackOut, **errors(400, 403, 404)},
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = self.owned_session(request, session_id)
        body = self.body(request)
        event = submit.record_feedback(session, body.get("item"), body.get("value"))
        return Response({"item": event["item"], "value": event["value"]})


class ClickView(SearchAPIView):
    @extend_schema(
        summary="Record that the shopper opened a result (product page or picture)",
        description="Call it when the shopper follows a result's link; the link opens on its own "
        "(the search page sends it as a keep-alive fetch, or over the websocket as "
        '{"type": "click", "item": <id>}). ' + CSRF_HINT,
        request=ClickIn,
        responses={201: ClickOut, **errors(400, 403, 404)},
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = self.owned_session(request, session_id)
        body = self.body(request)
        event = clicks.record_click(session, body.get("item"), source=body.get("source", "page"))
        return Response(
            {"item": event["item"], "turn": event["turn"]}, status=status.HTTP_201_CREATED
        )
