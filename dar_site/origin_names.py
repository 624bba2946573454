"""Origins as strings: parsing and normalising (no Django import: settings use it).

An origin is scheme, host and port (RFC 6454). Browsers send it without the port when it is the
scheme's default, so ``https://shop.example`` and ``https://shop.example:443`` are one origin and
both normalise to the former; any other difference (``http`` vs ``https``, another port, a
sub-domain) is another origin and never matches.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
SOCKET_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


class OriginError(ValueError):
    """Not an origin: says what is wrong with the value (shown in the admin and in settings)."""


def normalize_origin(value: str) -> str:
    """``scheme://host[:port]`` in lower case, the default port left out; raises ``OriginError``.

    Only http(s) origins: paths, queries, fragments, user names and wildcards are refused, so an
    allowed origin is always one exact origin.
    """
    text = value.strip()
    if not text:
        raise OriginError("An origin cannot be empty.")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise OriginError(f"{text!r} is not an origin ({error}).") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise OriginError(f"{text!r}: an origin starts with https:// or http://.")
    host = (parts.hostname or "").lower()
    if not host or "*" in host:
        raise OriginError(f"{text!r}: name one exact host (no wildcards).")
    if parts.username is not None or parts.password is not None:
        raise OriginError(f"{text!r}: an origin has no user name or password.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise OriginError(f"{text!r}: an origin has no path, query or fragment.")
    if ":" in host:  # IPv6 literal: urlsplit drops the brackets
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def normalize_origins(values: Iterable[str]) -> list[str]:
    """Each value normalised, duplicates dropped, order kept; raises on the first bad one."""
    seen: dict[str, None] = {}
    for value in values:
        if value.strip():
            seen.setdefault(normalize_origin(value), None)
    return list(seen)


def origin_or_none(value: str | None) -> str | None:
    """The normalised origin a browser sent, or None for a missing, ``null`` or malformed one."""
    if not value or value == "null":
        return None
    try:
        return normalize_origin(value)
    except OriginError:
        return None
