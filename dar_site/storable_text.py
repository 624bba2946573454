"""The one check for text that PostgreSQL cannot store, whatever transport brought it.

PostgreSQL's text and jsonb refuse the NUL character (psycopg raises DataError), and a lone UTF-16
surrogate (JSON's ``"\\ud800"`` escape decodes to one) cannot even be encoded as UTF-8 to send it.
Both used to surface as 500s or a dead websocket. Inputs are checked where they enter: the REST
API's JSON parser (``StorableJSONParser``, every JSON body), the search socket's frame parser, and
the services that take free text from forms (search messages, catalog slugs, item attributes).
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Deep enough for any body this API takes; a deeper one is refused rather than walked.
MAX_DEPTH = 32


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    for char in text:
        if "\ud800" <= char <= "\udfff":
            return (
                f"contains an unpaired surrogate (\\u{ord(char):04x}), which is not valid Unicode"
            )
    return None


def unstorable_reason(value: Any, _depth: int = 0) -> str | None:
    """Why ``value`` (a string, or JSON lists and dicts of them) cannot be stored, else None."""
    if isinstance(value, str):
        return _text_problem(value)
    if _depth > MAX_DEPTH:
        return "is nested too deeply"
    if isinstance(value, dict):
        for key, item in value.items():
            reason = unstorable_reason(key, _depth + 1) or unstorable_reason(item, _depth + 1)
            if reason:
                return reason
    elif isinstance(value, list | tuple):
        for item in value:
            reason = unstorable_reason(item, _depth + 1)
            if reason:
                return reason
    return None


class StorableJSONParser(JSONParser):
    """DRF's JSON parser, refusing (400) bodies with text PostgreSQL cannot store."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            # json's decoder recurses once per nesting level: "[[[[..." deep enough overflows.
            raise ParseError("JSON parse error - nested too deeply.") from None
        reason = unstorable_reason(data)
        if reason:
            raise ParseError(f"The request body {reason}.")
        return data
