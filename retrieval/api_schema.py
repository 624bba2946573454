"""OpenAPI shapes of the search endpoints' answers (drf-spectacular reads these serializers).

The views answer with the dicts of ``retrieval.turn.payloads``; these serializers only
document them, field for field, so the schema says what a client really receives.
``tests/test_search_api_schema.py`` checks real answers against them.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, inline_serializer
from rest_framework import serializers


class ErrorOut(serializers.Serializer):
    code = serializers.CharField(
        help_text="Machine-readable: invalid, empty_message, message_too_long, bad_feedback, "
        "forbidden, not_found, too_many_turns, rate_limited, busy, ..."
    )
    message = serializers.CharField(help_text="What went wrong, for people.")
    retry_after_s = serializers.IntegerField(
        required=False,
        help_text="With rate_limited and busy: seconds after which sending again is worth it "
        "(also the Retry-After header).",
    )


class CatalogRefOut(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()


class ItemOut(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    image = serializers.CharField(help_text="URL of the item's image.")
    url = serializers.CharField(help_text="Where 'Open' goes: the product page, else the image.")
    price = serializers.CharField(
        allow_null=True, help_text='Decimal as a string, e.g. "12.00"; null when unknown.'
    )
    currency = serializers.CharField(help_text="ISO 4217 code, or empty.")
    availability = serializers.ChoiceField(
        choices=["in_stock", "out_of_stock", "preorder", "backorder"]
    )
    brand = serializers.CharField()
    score = serializers.FloatField(help_text="Fused similarity; higher is better.")
    rank = serializers.IntegerField(help_text="1 is the best match.")


class PreviewOut(serializers.Serializer):
    url = serializers.CharField(help_text="URL of the generated preview image.")
    prompt = serializers.CharField()
    seed = serializers.IntegerField()


class TurnErrorOut(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class TurnQueueOut(serializers.Serializer):
    position = serializers.IntegerField(help_text="1: the next turn to start.")
    expected_wait_s = serializers.IntegerField(
        allow_null=True, help_text="About how long until it starts (null: no estimate yet)."
    )


class FilterOut(serializers.Serializer):
    key = serializers.CharField(
        help_text="price, availability, brand, category, or an attribute name of the catalog."
    )
    values = serializers.ListField(
        child=serializers.CharField(),
        help_text="Any of these values (text facets and availability; empty for price).",
    )
    min = serializers.CharField(allow_null=True, help_text='Price at least, e.g. "20.00".')
    max = serializers.CharField(allow_null=True, help_text='Price at most, e.g. "40.00".')
    currency = serializers.CharField(
        help_text="The price filter's currency: items priced in another never match it."
    )
    # DRF's metaclass takes declared fields out of the class (see api.ClickIn.source).
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=["said", "picked"], help_text="From the dialogue, or picked by the shopper."
    )
    label = serializers.CharField(  # type: ignore[assignment]
        help_text='For people, e.g. "under 40.00 EUR".'
    )


class TurnFiltersOut(serializers.Serializer):
    active = FilterOut(many=True, help_text="The filters the turn's results pass.")
    relaxed = FilterOut(
        many=True,
        help_text="Filters let go because no item matched them all (least certain first).",
    )
    notice = serializers.CharField(help_text="What the shopper is told of relaxed filters.")
    again = serializers.BooleanField(
        help_text="The turn searches the latest message again because the filters changed."
    )


class FilterStateOut(serializers.Serializer):
    picked = FilterOut(
        many=True,
        help_text="Filters the shopper picked (they hold until a later message says otherwise).",
    )
    removed = serializers.ListField(
        child=serializers.CharField(),
        help_text="Keys whose chip was removed: what was said before stays off.",
    )


class TurnOut(serializers.Serializer):
    index = serializers.IntegerField(help_text="0 for the session's first message.")
    message = serializers.CharField()
    restates = serializers.BooleanField(
        help_text="Whether the message rewrote the refined description: the dialogue starts "
        "again from it."
    )
    context = serializers.ListField(  # type: ignore[assignment]
        child=serializers.CharField(),
        help_text="The dialogue this turn searched with (from the last restatement on).",
    )
    status = serializers.ChoiceField(choices=["queued", "running", "done", "failed"])
    refined_query = serializers.CharField(help_text="The refined description ('' until refined).")
    prompts = serializers.ListField(child=serializers.CharField())
    fallback = serializers.BooleanField(
        help_text="True when the language model's answer was unusable and the shopper's own "
        "words were used."
    )
    previews = PreviewOut(many=True)
    results = ItemOut(many=True, help_text="Final results once ready, else the first results.")
    final = serializers.BooleanField(help_text="Whether ``results`` are the final ranking.")
    question = serializers.CharField(help_text="A clarifying question ('' when none).")
    filters = TurnFiltersOut()
    weights = serializers.DictField(child=serializers.FloatField())
    timings = serializers.DictField(
        child=serializers.FloatField(), help_text="Stage durations in milliseconds."
    )
    error = TurnErrorOut(allow_null=True)
    queue = TurnQueueOut(
        allow_null=True,
        help_text="While the turn waits for a search worker: where it stands (else null).",
    )
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class SessionOut(serializers.Serializer):
    id = serializers.UUIDField()
    catalog = CatalogRefOut()
    created_at = serializers.DateTimeField()
    filters = FilterStateOut()
    turns = TurnOut(many=True)
    feedback = serializers.DictField(
        child=serializers.IntegerField(), help_text="Item id -> 1 (liked) or -1 (disliked)."
    )


class FiltersChangeOut(serializers.Serializer):
    filters = FilterStateOut()
    turn = TurnOut(
        allow_null=True,
        help_text="The latest message searched again with the new filters (null before the "
        "first message: the filters apply to it).",
    )


class FeedbackOut(serializers.Serializer):
    item = serializers.IntegerField()
    value = serializers.IntegerField(help_text="1, -1, or 0 (taken back).")


class ClickOut(serializers.Serializer):
    item = serializers.IntegerField()
    turn = serializers.IntegerField(help_text="Index of the turn whose results showed the item.")


CSRF_HINT = (
    "Anonymous clients (cookie sessions) send the CSRF token: GET /api/csrf/ once, keep its "
    "cookies, and send its csrfToken in the X-CSRFToken header. HTTP Basic clients need no token."
)

WIDGET_HINT = (
    "A shop's embedded widget sends its catalog's publishable key in X-Dar-Key from a page whose "
    "Origin the catalog allows (no cookie, no CSRF token); creating a session then also answers "
    "a token, which the widget sends in X-Dar-Session-Token with every later request."
)


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """The error answers of an endpoint, all in ``ErrorOut``'s shape."""
    described = {
        400: "Bad input (the message says what).",
        403: "No access (or, for cookie clients, a missing CSRF token: " + CSRF_HINT + ")",
        404: "No such catalog or session, or not yours.",
        409: "The session has reached its turn limit.",
        429: "Too many requests (messages, or new sessions from one address); wait for the "
        "Retry-After header's seconds and retry.",
        503: "Search is overloaded: nothing was stored; send it again after Retry-After seconds.",
    }
    return {s: OpenApiResponse(ErrorOut, description=described[s]) for s in statuses}


CsrfOut = inline_serializer(
    "CsrfOut",
    {
        "csrfToken": serializers.CharField(),
        "header": serializers.CharField(help_text="The header to send it in."),
    },
)

MESSAGE_EXAMPLE = OpenApiExample("A first message", value={"text": "a red summer dress"})
FILTERS_EXAMPLE = OpenApiExample(
    "Pick a brand and a price, drop the colour",
    value={
        "set": [
            {"key": "brand", "values": ["Acme"]},
            {"key": "price", "max": 40, "currency": "EUR"},
        ],
        "remove": ["color"],
    },
)
