"""Keyed hashes of anonymous shoppers' Django session keys.

A session key is the shopper's cookie: whoever holds it acts as that shopper. A search session
therefore stores only ``HMAC-SHA256(SECRET_KEY, key)``; ownership is checked by hashing the
presented key. Neither analysts nor a database dump can turn the hash back into a cookie.
"""

from __future__ import annotations

import hmac

from django.utils.crypto import salted_hmac

# A salt of its own, so that this hash is never equal to any other HMAC Django derives.
SALT = "retrieval.SearchSession.session_key_hash"


def hash_session_key(session_key: str) -> str:
    """The stored form of a session key (64 hex characters)."""
    return salted_hmac(SALT, session_key, algorithm="sha256").hexdigest()


def matches(stored_hash: str, session_key: str | None) -> bool:
    """Whether ``session_key`` is the key ``stored_hash`` was made from (constant time)."""
    if not stored_hash or not session_key:
        return False
    return hmac.compare_digest(stored_hash, hash_session_key(session_key))
