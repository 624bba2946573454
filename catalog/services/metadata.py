"""Item metadata typed in by people (admin form, API): one parser, one set of messages."""

from __future__ import annotations

import json
from typing import Any

from dar_site.storable_text import unstorable_reason


def parse_attributes(raw: str) -> dict[str, Any]:
    """The attributes JSON object; blank means none. Raises ValueError saying what is wrong."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"Not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("Not valid JSON: nested too deeply.") from None
    if not isinstance(value, dict):
        raise ValueError("Must be a JSON object.")
    reason = unstorable_reason(value)
    if reason:
        raise ValueError(f"The attributes {reason}.")
    return value
