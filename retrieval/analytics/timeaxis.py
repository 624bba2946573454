"""The time axis of the dashboard's charts, fitted to the data it shows.

The bucket follows the span of the data, not the period picked in the filter: a day of turns is
shown in hours, a few weeks in days, longer spans in weeks. The axis runs from the start of the
first bucket to the end of the last one, so a chart never stretches one day of data over years
(matplotlib's autoscale does that for a single date). Times are naive local times
(``settings.TIME_ZONE``), which is what ``date_trunc`` over ``AT TIME ZONE`` gives back.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Literal

Bucket = Literal["hour", "day", "week"]

# Spans up to these lengths use the bucket; longer ones use weeks.
HOURLY_UP_TO = dt.timedelta(days=2)
DAILY_UP_TO = dt.timedelta(days=120)
# About this many labelled ticks at most on an axis.
MAX_TICKS = 10

_STEP = {
    "hour": dt.timedelta(hours=1),
    "day": dt.timedelta(days=1),
    "week": dt.timedelta(weeks=1),
}
_LABEL = {"hour": "%H:%M", "day": "%b %d", "week": "%Y-%m-%d"}


def bucket_for(span: dt.timedelta) -> Bucket:
    if span <= HOURLY_UP_TO:
        return "hour"
    if span <= DAILY_UP_TO:
        return "day"
    return "week"


def truncate(moment: dt.datetime, bucket: Bucket) -> dt.datetime:
    """The start of ``moment``'s bucket, as PostgreSQL's ``date_trunc`` computes it (weeks
    start on Monday)."""
    if bucket == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "day":
        return day
    return day - dt.timedelta(days=day.weekday())


@dataclass(frozen=True)
class TimeAxis:
    bucket: Bucket
    start: dt.datetime  # the first bucket's start
    end: dt.datetime  # the last bucket's end

    @property
    def step(self) -> dt.timedelta:
        return _STEP[self.bucket]

    @property
    def buckets(self) -> int:
        return round((self.end - self.start) / self.step)

    @property
    def tick_interval(self) -> int:
        """Buckets between labelled ticks, so that at most about MAX_TICKS are drawn."""
        return max(1, math.ceil(self.buckets / MAX_TICKS))

    @property
    def label_format(self) -> str:
        return _LABEL[self.bucket]

    @property
    def label(self) -> str:
        """The axis title: the unit, and the day when every tick is an hour of the same day."""
        if self.bucket == "hour":
            first, last = self.start.date(), (self.end - self.step).date()
            days = f"{first:%Y-%m-%d}" if first == last else f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"
            return f"hour ({days})"
        return "day" if self.bucket == "day" else "week starting"

    def centre(self, bucket_start: dt.datetime) -> dt.datetime:
        """Where a bucket's point is drawn: in the middle of the time it covers."""
        return bucket_start + self.step / 2


def fit(first: dt.datetime, last: dt.datetime) -> TimeAxis:
    """The axis for data from ``first`` to ``last`` (inclusive)."""
    if last < first:
        first, last = last, first
    bucket = bucket_for(last - first)
    return TimeAxis(bucket, truncate(first, bucket), truncate(last, bucket) + _STEP[bucket])
