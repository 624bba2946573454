"""Product clicks: a shopper opened a result. The analysts' funnel ends with them.

The search page records a click over its websocket (``{"type": "click", "item": <id>}``) or, when
the socket is down, with a keep-alive ``POST /api/search/sessions/<id>/clicks/`` carrying the CSRF
header; the link itself is an ordinary ``<a href>`` that opens whatever happens to the record.
A shop's embedded widget calls the same endpoint. There is deliberately no redirect endpoint
(``GET /click?to=...``): a GET that writes can be forged by any page, and one that redirects to a
URL from its query string is an open redirect.
"""

from __future__ import annotations

from typing import Any

from dar_site.input_ids import row_id
from retrieval.models import ProductClick, SearchSession, TurnResult

from .errors import SearchError

SOURCES = ("page", "widget")


def _item_id(value: Any) -> int:
    item_id = row_id(value)
    if item_id is None:
        raise SearchError("bad_click", "A click needs the id of a result item.")
    return item_id


def record_click(session: SearchSession, item: Any, *, source: Any = "page") -> dict[str, Any]:
    """Store that the shopper opened ``item``, a result this session was shown.

    The click is attributed to the latest turn whose results (provisional or final) held the
    item, which is the turn the shopper was looking at. An item the session was never shown is
    refused: it would count a click the search did not earn.
    """
    item_id = _item_id(item)
    if not isinstance(source, str) or source not in SOURCES:
        raise SearchError("bad_click", f"Unknown click source {source!r}.")
    shown = (
        TurnResult.objects.filter(turn__session=session, item_id=item_id)
        .order_by("-turn__index")
        .values_list("turn_id", "turn__index")
        .first()
    )
    if shown is None:
        raise SearchError("bad_click", f"Item {item_id} was not among this session's results.")
    turn_id, turn_index = shown
    ProductClick.objects.create(session=session, turn_id=turn_id, item_id=item_id, source=source)
    return {"type": "click", "turn": turn_index, "item": item_id}
