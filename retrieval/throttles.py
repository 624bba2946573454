"""DRF throttles of the search API (counted in Django's cache: Redis, shared by web processes)."""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import AnonRateThrottle


class SessionCreateThrottle(AnonRateThrottle):
    """New search sessions per anonymous client address, at DAR_SESSION_CREATE_RATE.

    Each one is a row (and a session cookie row): without a limit a script creates them as fast
    as it can post. Signed-in users are not counted here (their sessions are theirs to manage).
    """

    scope = "search_session_create"

    def get_rate(self) -> str:
        # Read per request, not frozen at import like DEFAULT_THROTTLE_RATES, so it follows the
        # settings (and tests that override them).
        return str(settings.DAR_SESSION_CREATE_RATE)
