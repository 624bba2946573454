"""The ChatIR / PlugIR metrics on small examples computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retrieval.evaluation import protocol

# Two dialogues, three rounds; 0-based ranks of the target at each round.
RANKS = [[5, 0, 3], [20, 12, 8]]


def test_best_rank_so_far() -> None:
    assert protocol.best_so_far(RANKS).tolist() == [[5, 0, 0], [20, 12, 8]]


def test_hits_are_cumulative() -> None:
    # Dialogue 0 hits the top 1 at round 1 and stays a hit after its rank falls back to 3.
    assert protocol.hits_at(RANKS, 1) == [0.0, 0.5, 0.5]
    assert protocol.hits_at(RANKS, 10) == [0.5, 0.5, 1.0]


def test_recall_is_per_round() -> None:
    assert protocol.recall_at(RANKS, 1) == [0.0, 0.5, 0.0]
    assert protocol.recall_at(RANKS, 5) == [0.0, 0.5, 0.5]
    assert protocol.recall_at(RANKS, 10) == [0.5, 0.5, 1.0]


def test_bri_is_the_trapezoid_area_of_mean_log_best_rank() -> None:
    # m_k + 1: dialogue 0 -> 6, 1, 1; dialogue 1 -> 21, 13, 9. R = 3, two trapezoids:
    # k=0: mean((ln6 + ln1)/2, (ln21 + ln13)/2); k=1: mean((ln1 + ln1)/2, (ln13 + ln9)/2).
    first = ((math.log(6) + 0) / 2 + (math.log(21) + math.log(13)) / 2) / 2
    second = (0 + (math.log(13) + math.log(9)) / 2) / 2
    assert protocol.bri(RANKS) == pytest.approx((first + second) / 2)


def test_bri_is_zero_when_every_target_is_found_at_once() -> None:
    assert protocol.bri([[0, 4, 9], [0, 0, 0]]) == 0.0


def test_summary_holds_every_metric_per_round() -> None:
    summary = protocol.summarize(np.array(RANKS))
    assert summary["dialogues"] == 2 and summary["rounds"] == 3
    for k in (1, 5, 10):
        assert summary[f"hits@{k}"] == protocol.hits_at(RANKS, k)
        assert summary[f"recall@{k}"] == protocol.recall_at(RANKS, k)
    assert summary["bri"] == protocol.bri(RANKS)
    assert protocol.summarize([[3]])["bri"] is None  # one round has no trapezoid


@pytest.mark.parametrize("bad", [[], [[]], [[1, -1]], [1, 2]])
def test_bad_rank_matrices_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        protocol.as_matrix(bad)  # type: ignore[arg-type]
