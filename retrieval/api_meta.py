"""The API's front door: ``/api/`` lists the endpoints, ``/api/csrf/`` hands a cookie client its
CSRF token (the first unsafe request of an anonymous client needs one)."""

from __future__ import annotations

from django.middleware.csrf import get_token
from django.urls import reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from retrieval.api_schema import CSRF_HINT, CsrfOut


class ApiRootView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        summary="The API's entry points",
        responses=inline_serializer("ApiRoot", {"links": serializers.DictField()}),
    )
    def get(self, request: Request) -> Response:
        def url(name: str, *args: object) -> str:
            return request.build_absolute_uri(reverse(name, args=args))

        return Response(
            {
                "links": {
                    "csrf": url("api-csrf"),
                    "search_sessions": url("search-session-create"),
                    "catalogs": url("api-catalog-list"),
                    "schema": url("api-schema"),
                    "docs": url("api-docs"),
                },
                "csrf": CSRF_HINT,
            }
        )


class CsrfView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[type] = []

    @extend_schema(
        summary="Get a CSRF token (and its cookie) for cookie-session clients",
        description=CSRF_HINT,
        responses=CsrfOut,
    )
    def get(self, request: Request) -> Response:
        # get_token also marks the response to set the csrftoken cookie.
        return Response({"csrfToken": get_token(request), "header": "X-CSRFToken"})
