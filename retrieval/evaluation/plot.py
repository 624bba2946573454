"""Hits@10 per round of every mode run, as a PNG (matplotlib Agg, no display needed)."""

from __future__ import annotations

from pathlib import Path


def hits_plot(hits: dict[str, list[float]], path: Path, *, k: int = 10, title: str = "") -> Path:
    """Draw ``hits[mode][round]`` (fractions) as percentages, one line per mode."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 4.0), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    for mode, values in hits.items():
        ax.plot(range(len(values)), [100 * v for v in values], marker="o", label=mode)
    ax.set_xlabel("dialogue round")
    ax.set_ylabel(f"Hits@{k} (%)")
    ax.set_ylim(0, 100)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.set_title(title or f"Cumulative Hits@{k} per round")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
