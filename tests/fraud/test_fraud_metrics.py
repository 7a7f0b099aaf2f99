"""Histogram metrics: exact up to the grid, and summable across institutions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InputError
from fraud.metrics import (
    SCORE_GRID_BINS,
    Metrics,
    choose_threshold,
    curves_from_histograms,
    exact_metrics,
    metrics_from_histograms,
    score_histograms,
    threshold_for_recall,
)

FIELDS = ("precision", "recall", "f1", "auc_roc", "auc_pr")
COUNTS = ("tp", "fp", "tn", "fn", "num_examples", "num_positives")


def _assert_same(got: Metrics, want: Metrics) -> None:
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        if math.isnan(b):
            assert math.isnan(a), name
        else:
            assert a == pytest.approx(b, abs=1e-9), name
    for name in COUNTS:
        assert getattr(got, name) == getattr(want, name), name


@st.composite
def snapped_predictions(draw: st.DrawFn, min_size: int = 0) -> tuple[int, np.ndarray, np.ndarray]:
    """Scores at bin centres of a random grid, with labels."""
    bins = draw(st.sampled_from([1, 2, 7, 10, 100, SCORE_GRID_BINS]))
    n = draw(st.integers(min_size, 60))
    idx = np.array(draw(st.lists(st.integers(0, bins - 1), min_size=n, max_size=n)), dtype=np.int64)
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=np.int64)
    return bins, (idx + 0.5) / bins, y


@settings(max_examples=200, deadline=None)
@given(data=snapped_predictions(), k=st.integers(0, SCORE_GRID_BINS))
def test_histogram_metrics_equal_exact_metrics_on_the_grid(data: tuple[int, np.ndarray, np.ndarray], k: int) -> None:
    bins, scores, y = data
    threshold = (k % (bins + 1)) / bins

    pos, neg = score_histograms(scores, y, bins)

    _assert_same(metrics_from_histograms(pos, neg, threshold), exact_metrics(scores, y, threshold))


@settings(max_examples=100, deadline=None)
@given(
    a=snapped_predictions(min_size=1),
    b_n=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(0, SCORE_GRID_BINS),
)
def test_summed_histograms_give_the_pooled_metrics(
    a: tuple[int, np.ndarray, np.ndarray], b_n: int, seed: int, k: int
) -> None:
    bins, scores_a, y_a = a
    rng = np.random.default_rng(seed)
    scores_b = (rng.integers(0, bins, b_n) + 0.5) / bins
    y_b = rng.integers(0, 2, b_n)
    threshold = (k % (bins + 1)) / bins

    pos_a, neg_a = score_histograms(scores_a, y_a, bins)
    pos_b, neg_b = score_histograms(scores_b, y_b, bins)
    pooled = metrics_from_histograms(pos_a + pos_b, neg_a + neg_b, threshold)

    both_scores = np.concatenate([scores_a, scores_b])
    both_y = np.concatenate([y_a, y_b])
    np.testing.assert_array_equal(pos_a + pos_b, score_histograms(both_scores, both_y, bins)[0])
    _assert_same(pooled, exact_metrics(both_scores, both_y, threshold))


def test_raw_scores_are_close_to_exact_metrics() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5_000)
    scores = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0.0, 1.0)

    pos, neg = score_histograms(scores, y)
    got = metrics_from_histograms(pos, neg, 0.5)
    want = exact_metrics(scores, y, 0.5)

    assert got.auc_roc == pytest.approx(want.auc_roc, abs=1e-3)
    assert got.auc_pr == pytest.approx(want.auc_pr, abs=1e-3)
    assert got.recall == pytest.approx(want.recall, abs=1e-3)


def test_histogram_bins_and_edges() -> None:
    scores = np.array([0.0, 0.1, 0.29, 0.999, 1.0])
    y = np.array([0, 1, 1, 0, 1])

    pos, neg = score_histograms(scores, y, bins=100)

    assert pos.dtype == np.int64 and neg.dtype == np.int64 and pos.shape == (100,)
    assert neg[0] == 1 and pos[10] == 1 and pos[29] == 1  # 0.29 sits on an edge: it opens bin 29.
    assert neg[99] == 1 and pos[99] == 1  # The last bin is closed.
    assert pos.sum() + neg.sum() == 5


def test_threshold_counts_bins_whose_lower_edge_reaches_it() -> None:
    pos = np.array([0, 1, 0, 2])
    neg = np.array([3, 0, 1, 0])

    m = metrics_from_histograms(pos, neg, 0.5)

    assert (m.tp, m.fp, m.tn, m.fn) == (2, 1, 3, 1)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)


def test_no_positives_gives_nan_aucs_and_zero_rates() -> None:
    m = metrics_from_histograms(np.zeros(10, np.int64), np.arange(10), 0.5)

    assert math.isnan(m.auc_roc) and math.isnan(m.auc_pr)
    assert m.recall == 0.0 and m.f1 == 0.0 and m.num_positives == 0


def test_empty_histograms_do_not_crash() -> None:
    m = metrics_from_histograms(np.zeros(10, np.int64), np.zeros(10, np.int64), 0.3)

    assert m.num_examples == 0 and m.precision == 0.0
    assert math.isnan(m.auc_roc) and math.isnan(m.auc_pr)
    fpr, tpr, precision, recall = curves_from_histograms(np.zeros(4, np.int64), np.zeros(4, np.int64))
    assert fpr.shape == (5,) and np.isnan(tpr).all() and (precision == 1.0).all()


def test_only_positives_has_nan_roc_and_perfect_ap() -> None:
    m = metrics_from_histograms(np.array([1, 2, 3]), np.zeros(3, np.int64), 0.0)

    assert math.isnan(m.auc_roc)
    assert m.auc_pr == 1.0 and m.recall == 1.0


def test_choose_threshold_minimises_expected_cost() -> None:
    rng = np.random.default_rng(3)
    pos = rng.integers(0, 5, 50) * (np.arange(50) > 20)
    neg = rng.integers(0, 40, 50) * (np.arange(50) < 35)

    chosen = choose_threshold(pos, neg, fn_cost=10.0, fp_cost=1.0)

    costs = []
    for k in range(51):
        m = metrics_from_histograms(pos, neg, k / 50)
        costs.append(10.0 * m.fn + 1.0 * m.fp)
    best = min(costs)
    assert chosen == costs.index(best) / 50
    m = metrics_from_histograms(pos, neg, chosen)
    assert 10.0 * m.fn + m.fp == best


def test_choose_threshold_reacts_to_costs() -> None:
    pos = np.array([1, 1, 1, 1])
    neg = np.array([5, 5, 5, 5])

    assert choose_threshold(pos, neg, fn_cost=100.0, fp_cost=1.0) == 0.0
    assert choose_threshold(pos, neg, fn_cost=1.0, fp_cost=100.0) == 1.0


def test_threshold_for_recall() -> None:
    pos = np.array([1, 1, 1, 1, 0])
    neg = np.array([0, 0, 0, 0, 3])

    assert threshold_for_recall(pos, neg, 0.5) == pytest.approx(0.4)
    assert threshold_for_recall(pos, neg, 1.0) == 0.0
    assert metrics_from_histograms(pos, neg, threshold_for_recall(pos, neg, 0.75)).recall >= 0.75
    with pytest.raises(InputError, match="no positives"):
        threshold_for_recall(np.zeros(5, np.int64), neg, 0.5)


def test_curves_run_from_nothing_to_everything_flagged() -> None:
    pos = np.array([0, 1, 3])
    neg = np.array([4, 1, 0])

    fpr, tpr, precision, recall = curves_from_histograms(pos, neg)

    assert fpr[0] == 0.0 and tpr[0] == 0.0 and fpr[-1] == 1.0 and tpr[-1] == 1.0
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    np.testing.assert_allclose(precision, [1.0, 1.0, 0.8, 4 / 9])
    np.testing.assert_array_equal(recall, tpr)


@pytest.mark.parametrize(
    ("scores", "y"),
    [([0.5, 1.5], [0, 1]), ([0.5, float("nan")], [0, 1]), ([0.5, 0.6], [0, 2]), ([0.5], [0, 1])],
)
def test_invalid_inputs_raise_input_error(scores: list[float], y: list[int]) -> None:
    with pytest.raises(InputError):
        score_histograms(np.array(scores), np.array(y), 10)


def test_inputs_are_not_modified() -> None:
    scores = np.array([0.2, 0.7, 0.7])
    y = np.array([0, 1, 0])
    before = (scores.copy(), y.copy())

    pos, neg = score_histograms(scores, y, 10)
    metrics_from_histograms(pos, neg, 0.5)
    exact_metrics(scores, y, 0.5)

    np.testing.assert_array_equal(scores, before[0])
    np.testing.assert_array_equal(y, before[1])
