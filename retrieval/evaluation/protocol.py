"""The ChatIR / PlugIR metrics over a matrix of target ranks.

``ranks`` has one row per dialogue and one column per round (0..R-1); each entry is the 0-based
rank of the dialogue's target among the corpus at that round. All functions are pure.

- Hits@K at round k (ChatIR): share of dialogues whose target was in the top K at *any* round
  <= k, so it never decreases over rounds.
- Recall@K at round k: share of dialogues whose target is in the top K at round k itself.
- BRI (PlugIR's Best log Rank Integral): with m_k the best rank up to round k,
  ``1/(R-1) * sum_{k=0}^{R-2} mean_d[(log(m_k + 1) + log(m_{k+1} + 1)) / 2]`` — the trapezoid
  area under the mean log best rank, natural log, lower is better (0 means found at once).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

DEFAULT_KS = (1, 5, 10)


def as_matrix(ranks: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """Validate and convert to an int64 (dialogues x rounds) array."""
    matrix = np.asarray(ranks, dtype=np.int64)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(
            f"ranks must be a non-empty (dialogues x rounds) matrix, got {matrix.shape}"
        )
    if (matrix < 0).any():
        raise ValueError("ranks are 0-based and cannot be negative")
    return matrix


def best_so_far(ranks: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """m_k: each dialogue's best (lowest) rank over rounds 0..k."""
    return np.minimum.accumulate(as_matrix(ranks), axis=1)


def hits_at(ranks: Sequence[Sequence[int]] | np.ndarray, k: int) -> list[float]:
    """Cumulative Hits@k per round, as fractions in [0, 1]."""
    return [float(x) for x in (best_so_far(ranks) < k).mean(axis=0)]


def recall_at(ranks: Sequence[Sequence[int]] | np.ndarray, k: int) -> list[float]:
    """Per-round (non-cumulative) Recall@k: target in the top k at that round."""
    return [float(x) for x in (as_matrix(ranks) < k).mean(axis=0)]


def bri(ranks: Sequence[Sequence[int]] | np.ndarray) -> float:
    """PlugIR's BRI over all the rounds given (needs at least two)."""
    best = best_so_far(ranks)
    rounds = best.shape[1]
    if rounds < 2:
        raise ValueError("BRI needs at least two rounds")
    logs = np.log(best.astype(np.float64) + 1.0)
    trapezoids = (logs[:, :-1] + logs[:, 1:]) / 2.0  # (dialogues, R-1)
    return float(trapezoids.mean(axis=0).sum() / (rounds - 1))


def summarize(
    ranks: Sequence[Sequence[int]] | np.ndarray, ks: Iterable[int] = DEFAULT_KS
) -> dict[str, Any]:
    """Every metric of one mode, as written to metrics.json (fractions, not percentages)."""
    matrix = as_matrix(ranks)
    out: dict[str, Any] = {"dialogues": int(matrix.shape[0]), "rounds": int(matrix.shape[1])}
    for k in ks:
        out[f"hits@{k}"] = hits_at(matrix, k)
    for k in ks:
        out[f"recall@{k}"] = recall_at(matrix, k)
    out["bri"] = bri(matrix) if matrix.shape[1] >= 2 else None
    return out
