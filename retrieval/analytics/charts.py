"""Dashboard charts drawn server-side with matplotlib's Agg renderer, returned as PNG bytes.

``matplotlib.figure.Figure`` is used directly instead of pyplot: pyplot keeps global state, which
is not safe in a threaded web server, and it would pick an interactive backend on a desktop.

Charts over time take the fitted ``TimeAxis``: their x limits, ticks and labels come from it
(matplotlib's own date autoscale turns a single day into a multi-year axis). Each point sits in
the middle of the bucket it summarises. ``*_figure`` functions return the figure itself, which the
tests read; the others render it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from retrieval.analytics.funnel import Stage
from retrieval.analytics.stats import FallbackPoint, FeedbackDay, StagePoint
from retrieval.analytics.timeaxis import TimeAxis

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_SIZE = (7.0, 3.2)
_DPI = 100


def _figure() -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    return fig


def _png(fig: Figure | None) -> bytes | None:
    if fig is None:
        return None
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """Inline image source, so a chart needs no second request and no external host."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _time_axis(ax: Axes, axis: TimeAxis) -> None:
    from matplotlib import dates

    locators: dict[str, Any] = {
        "hour": dates.HourLocator(interval=axis.tick_interval),
        "day": dates.DayLocator(interval=axis.tick_interval),
        "week": dates.WeekdayLocator(byweekday=dates.MO, interval=axis.tick_interval),
    }
    start: Any = axis.start  # matplotlib's stubs do not admit datetimes
    end: Any = axis.end
    ax.set_xlim(start, end)
    ax.xaxis.set_major_locator(locators[axis.bucket])
    ax.xaxis.set_major_formatter(dates.DateFormatter(axis.label_format))
    ax.set_xlabel(axis.label)
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")


def _percent_axis(ax: Axes) -> None:
    # A little room above 100 %: a point at 100 % would otherwise be cut in half by the frame.
    ax.set_ylim(0, 104)
    ax.set_yticks(range(0, 101, 20))


def _x(axis: TimeAxis, points: Sequence[Any]) -> Any:
    return [axis.centre(p.at) for p in points]


def turns_histogram(counts: dict[int, int]) -> bytes | None:
    if not counts:
        return None
    from matplotlib.ticker import MaxNLocator

    fig = _figure()
    ax = fig.add_subplot()
    ax.bar(list(counts), list(counts.values()), width=0.8, color="#4c72b0")
    ax.set_xlabel("turns in the session")
    ax.set_ylabel("sessions")
    ax.set_title("Turns per session")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def _percentile_lines(ax: Axes, axis: TimeAxis, points: list[StagePoint], name: str) -> None:
    (line,) = ax.plot(_x(axis, points), [p.p50 for p in points], marker="o", label=f"{name} p50")
    ax.plot(
        _x(axis, points),
        [p.p95 for p in points],
        marker="x",
        linestyle="--",
        color=line.get_color(),
        label=f"{name} p95",
    )


def latency_figure(latency: dict[str, list[StagePoint]], axis: TimeAxis | None) -> Figure | None:
    if not latency or axis is None:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for stage, points in sorted(latency.items()):
        _percentile_lines(ax, axis, points, stage)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("milliseconds")
    ax.set_title("Latency per stage (p50 solid, p95 dashed)")
    ax.legend(fontsize="x-small", ncols=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _time_axis(ax, axis)
    return fig


def latency_chart(latency: dict[str, list[StagePoint]], axis: TimeAxis | None) -> bytes | None:
    return _png(latency_figure(latency, axis))


def end_to_end_figure(points: list[StagePoint], axis: TimeAxis | None) -> Figure | None:
    if not points or axis is None:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    _percentile_lines(ax, axis, [_seconds(p) for p in points], "end to end")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("seconds")
    ax.set_title("Latency from message to final results, queue included")
    ax.legend(fontsize="small")
    _time_axis(ax, axis)
    return fig


def _seconds(point: StagePoint) -> StagePoint:
    return StagePoint(point.at, point.p50 / 1000, point.p95 / 1000, point.turns)


def end_to_end_chart(points: list[StagePoint], axis: TimeAxis | None) -> bytes | None:
    return _png(end_to_end_figure(points, axis))


def feedback_figure(days: list[FeedbackDay], axis: TimeAxis | None) -> Figure | None:
    if not days or axis is None:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(_x(axis, days), [100 * d.feedback_rate for d in days], marker="o", label="any feedback")
    ax.plot(_x(axis, days), [100 * d.like_rate for d in days], marker="o", label="liked a result")
    _percent_axis(ax)
    ax.set_ylabel("% of sessions")
    ax.set_title("Feedback rate")
    ax.legend(fontsize="small")
    _time_axis(ax, axis)
    return fig


def feedback_chart(days: list[FeedbackDay], axis: TimeAxis | None) -> bytes | None:
    return _png(feedback_figure(days, axis))


def fallback_figure(points: list[FallbackPoint], axis: TimeAxis | None) -> Figure | None:
    if not points or axis is None:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(_x(axis, points), [100 * p.rate for p in points], marker="o", color="#c44e52")
    _percent_axis(ax)
    ax.set_ylabel("% of done turns")
    ax.set_title("Fallback rate (the shopper's own words searched)")
    _time_axis(ax, axis)
    return fig


def fallback_chart(points: list[FallbackPoint], axis: TimeAxis | None) -> bytes | None:
    return _png(fallback_figure(points, axis))


def funnel_figure(stages: list[Stage]) -> Figure | None:
    if not stages or not stages[0].sessions:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    labels = [s.label for s in stages][::-1]
    values = [s.sessions for s in stages][::-1]
    from matplotlib.ticker import MaxNLocator

    bars = ax.barh(labels, values, color="#55a868")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.bar_label(bars, labels=[f"{s.sessions} ({100 * s.of_first:.0f}%)" for s in stages][::-1])
    ax.set_xlim(0, max(values) * 1.2)
    ax.set_xlabel("sessions")
    ax.set_title("Funnel")
    return fig


def funnel_chart(stages: list[Stage]) -> bytes | None:
    return _png(funnel_figure(stages))
