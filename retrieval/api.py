"""REST API for clients without websockets: the same operations as the search socket.

Poll ``GET .../turns/<index>/`` (or the session) to follow a turn. Anonymous shoppers may use
public catalogs; their sessions belong to their Django session cookie, so every unsafe request
needs the CSRF token, signed in or not (HTTP Basic clients carry no cookie and are exempt).
"""

from __future__ import annotations

import math
from typing import Any

from drf_spectacular.authentication import SessionScheme
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from retrieval.api_schema import (
    CSRF_HINT,
    MESSAGE_EXAMPLE,
    FeedbackOut,
    SessionOut,
    TurnOut,
    errors,
)
from retrieval.models import SearchSession
from retrieval.services import access, feedback, payloads, sessions, turns
from retrieval.services.errors import SearchError
from retrieval.throttles import SessionCreateThrottle


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


class ShopperSessionScheme(SessionScheme):
    """Documents ShopperSessionAuthentication as the cookie auth it is (drf-spectacular)."""

    target_class = "retrieval.api.ShopperSessionAuthentication"
    name = "shopperCookieAuth"


class SessionIn(serializers.Serializer):
    catalog = serializers.CharField(help_text="Catalog slug (or id).")


class MessageIn(serializers.Serializer):
    text = serializers.CharField()


class FeedbackIn(serializers.Serializer):
    item = serializers.IntegerField()
    value = serializers.ChoiceField(choices=[1, -1, 0], help_text="1 like, -1 dislike, 0 undo.")


class SearchAPIView(APIView):
    authentication_classes = [BasicAuthentication, ShopperSessionAuthentication]
    # Access is decided per catalog and per session by retrieval.services.access.
    permission_classes = [AllowAny]

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, SearchError):
            return Response({"code": exc.code, "message": exc.message}, status=exc.http_status)
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
        return access.session_for(session_id, request.user, request.session.session_key)


class SessionCreateView(SearchAPIView):
    throttle_classes = [SessionCreateThrottle]

    @extend_schema(
        summary="Start a search session in a catalog",
        description="The session belongs to the signed-in user, else to the client's cookie "
        "session. " + CSRF_HINT,
        request=SessionIn,
        responses={201: SessionOut, **errors(400, 403, 404, 429)},
    )
    def post(self, request: Request) -> Response:
        catalog = sessions.catalog_for(self.body(request).get("catalog"), request.user)
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
        turns.sweep_stuck_turns(session_id=session.pk)
        return Response(payloads.session_payload(session))


class MessageView(SearchAPIView):
    @extend_schema(
        summary="Send a message: starts the session's next turn",
        description="Answers at once with the queued turn; poll the turn (or the session) until "
        "its status is done or failed. One turn at a time is best: a message sent while a turn "
        "runs is queued behind it.",
        request=MessageIn,
        examples=[MESSAGE_EXAMPLE],
        responses={202: TurnOut, **errors(400, 403, 404, 409, 429)},
    )
    def post(self, request: Request, session_id: str) -> Response:
        session = self.owned_session(request, session_id)
        turn = turns.submit_message(
            session, self.body(request).get("text"), address=request.META.get("REMOTE_ADDR")
        )
        return Response(payloads.turn_payload(turn), status=status.HTTP_202_ACCEPTED)


class TurnView(SearchAPIView):
    @extend_schema(
        summary="One turn: its status, refined description, previews and results",
        responses={200: TurnOut, **errors(403, 404)},
    )
    def get(self, request: Request, session_id: str, index: int) -> Response:
        session = self.owned_session(request, session_id)
        turns.sweep_stuck_turns(session_id=session.pk)
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
        event = feedback.record_feedback(session, body.get("item"), body.get("value"))
        return Response({"item": event["item"], "value": event["value"]})
