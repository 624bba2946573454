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
        "forbidden": 403,
        "not_found": 404,
        "too_many_turns": 409,
        "rate_limited": 429,
    }

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return self.HTTP_STATUS.get(self.code, 400)

    def as_event(self, turn: int | None = None) -> dict[str, object]:
        return {"type": "error", "turn": turn, "code": self.code, "message": self.message}
