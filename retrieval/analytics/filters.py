"""The dashboard's filter: a period (the last N days, or a date range) and a catalog.

Parsed from the query string so that the page, its charts and its exports always show the same
sessions. Bad dates are an error the page reports (400), not silently another period.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from django.db.models import QuerySet
from django.utils import timezone

from retrieval.models import SearchSession

DAYS = (7, 30, 90, 365)
DEFAULT_DAYS = 30


class FilterError(ValueError):
    pass


@dataclass(frozen=True)
class Period:
    """What the page says it shows: "Last 30 days" or "Date range", and its first and last local
    dates (None for an open end of a range)."""

    label: str
    first: dt.date | None
    last: dt.date | None


@dataclass(frozen=True)
class DashboardFilter:
    days: int  # used when no date range is given
    start: dt.date | None = None  # inclusive, local dates
    end: dt.date | None = None
    catalog_id: int | None = None

    @property
    def is_range(self) -> bool:
        return self.start is not None or self.end is not None

    def bounds(
        self, now: dt.datetime | None = None
    ) -> tuple[dt.datetime | None, dt.datetime | None]:
        """[since, until) as aware datetimes; None for an open end."""
        now = now or timezone.now()
        if not self.is_range:
            return now - dt.timedelta(days=self.days), None
        since = _midnight(self.start) if self.start else None
        until = _midnight(self.end + dt.timedelta(days=1)) if self.end else None
        return since, until

    def period(self, now: dt.datetime | None = None) -> Period:
        if self.is_range:
            return Period("Date range", self.start, self.end)
        now = now or timezone.now()
        since, _ = self.bounds(now)
        first = timezone.localdate(since) if since else None
        return Period(f"Last {self.days} days", first, timezone.localdate(now))

    def apply(self, sessions: QuerySet[SearchSession]) -> QuerySet[SearchSession]:
        since, until = self.bounds()
        if since is not None:
            sessions = sessions.filter(created_at__gte=since)
        if until is not None:
            sessions = sessions.filter(created_at__lt=until)
        if self.catalog_id is not None:
            sessions = sessions.filter(catalog_id=self.catalog_id)
        return sessions

    def query(self) -> dict[str, str]:
        """The query string that reproduces this filter (for export links)."""
        out: dict[str, str] = {}
        if self.is_range:
            if self.start:
                out["start"] = self.start.isoformat()
            if self.end:
                out["end"] = self.end.isoformat()
        else:
            out["days"] = str(self.days)
        if self.catalog_id is not None:
            out["catalog"] = str(self.catalog_id)
        return out


def _midnight(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time()))


def _date(params: Mapping[str, str], name: str) -> dt.date | None:
    value = (params.get(name) or "").strip()
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise FilterError(f"{name} must be a date like 2026-12-01, not {value!r}.") from None


def parse(params: Mapping[str, str]) -> DashboardFilter:
    try:
        days = int(params.get("days") or DEFAULT_DAYS)
    except ValueError:
        days = DEFAULT_DAYS
    if days not in DAYS:
        days = DEFAULT_DAYS
    start, end = _date(params, "start"), _date(params, "end")
    if start and end and end < start:
        raise FilterError(f"The range ends ({end}) before it starts ({start}).")
    try:
        catalog_id: int | None = int(params["catalog"])
    except (KeyError, ValueError):
        catalog_id = None
    return DashboardFilter(days, start, end, catalog_id)
