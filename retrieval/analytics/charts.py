"""Dashboard charts drawn server-side with matplotlib's Agg renderer, returned as PNG bytes.

``matplotlib.figure.Figure`` is used directly instead of pyplot: pyplot keeps global state, which
is not safe in a threaded web server, and it would pick an interactive backend on a desktop.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

from retrieval.analytics.stats import FeedbackDay, StagePoint

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_SIZE = (7.0, 3.2)
_DPI = 100


def _figure() -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """Inline image source, so a chart needs no second request and no external host."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


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


def latency_chart(latency: dict[str, list[StagePoint]]) -> bytes | None:
    if not latency:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    for stage, points in sorted(latency.items()):
        days: Any = [p.day for p in points]  # matplotlib's stubs do not admit dates
        (line,) = ax.plot(days, [p.p50 for p in points], marker="o", label=f"{stage} p50")
        ax.plot(
            days,
            [p.p95 for p in points],
            marker="x",
            linestyle="--",
            color=line.get_color(),
            label=f"{stage} p95",
        )
    ax.set_ylabel("milliseconds")
    ax.set_title("Latency per stage (p50 solid, p95 dashed)")
    ax.legend(fontsize="x-small", ncols=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.autofmt_xdate()
    return _png(fig)


def feedback_chart(days: list[FeedbackDay]) -> bytes | None:
    if not days:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    x: Any = [d.day for d in days]  # matplotlib's stubs do not admit dates
    ax.plot(x, [100 * d.feedback_rate for d in days], marker="o", label="any feedback")
    ax.plot(x, [100 * d.like_rate for d in days], marker="o", label="liked a result")
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of sessions")
    ax.set_title("Feedback rate")
    ax.legend(fontsize="small")
    fig.autofmt_xdate()
    return _png(fig)
