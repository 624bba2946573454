"""The one error type the search services raise for anything the shopper can fix or must be told.

Every transport maps it the same way: the websocket sends ``{"type": "error", "code", "message"}``
and keeps the socket open; the REST API answers with ``http_status`` and the same body.
"""

from __future__ import annotations


class SearchError(Exception):
    # code -> HTTP status for the REST API; the websocket sends the code as is.
    HTTP_STATUS = {
        "invalid": 400,
        "bad_json": 400,
        "unknown_type": 400,
        "empty_message": 400,
        "message_too_long": 400,
        "invalid_text": 400,
        "bad_feedback": 400,
        "bad_click": 400,
        # A filter that is not one of the catalog's facets, a negative price, not a number...
        "bad_filter": 400,
        "forbidden": 403,
        "bad_key": 403,
        "origin_not_allowed": 403,
        "not_found": 404,
        "too_many_turns": 409,
        "rate_limited": 429,
        # Overload (retrieval/turn/admission.py): come back later, with Retry-After.
        "busy": 503,
    }

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # Seconds after which sending the same thing again is worth it (REST: Retry-After).
        self.retry_after = retry_after

    @property
    def http_status(self) -> int:
        return self.HTTP_STATUS.get(self.code, 400)

    def as_body(self) -> dict[str, object]:
        """The REST answer's body (and, with ``type`` and ``turn``, the websocket frame's)."""
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            body["retry_after_s"] = self.retry_after
        return body

    def as_event(self, turn: int | None = None) -> dict[str, object]:
        return {"type": "error", "turn": turn, **self.as_body()}
