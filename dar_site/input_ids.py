"""Row ids as clients send them (JSON numbers or strings): one rule for every endpoint and frame.

``str.isdigit()`` accepts "²" and other Unicode digits that ``int()`` then refuses, and a number
beyond a bigint fails in PostgreSQL, not in Python: both crashed requests before (issue #16).
"""

from __future__ import annotations

from typing import Any

_BIGINT_MAX = 2**63 - 1


def row_id(value: Any) -> int | None:
    """A positive bigint from an int or a string of ASCII digits; None for anything else
    (booleans included: ``True`` is an int to Python, not an id to a client)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        # 19 digits may still exceed a bigint; more are refused before int() parses them.
        if not (text.isascii() and text.isdigit() and len(text) <= 19):
            return None
        value = int(text)
    if isinstance(value, int) and 0 < value <= _BIGINT_MAX:
        return value
    return None
