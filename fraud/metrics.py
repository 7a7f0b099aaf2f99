"""Pooled classification metrics from summable score histograms.

Each institution bins its fraud scores on a fixed grid over [0, 1] and keeps
two count vectors: frauds and legitimate transactions per bin. Counts add up
across institutions (and under secure aggregation), so the federation gets
pooled precision, recall, F1, ROC AUC and average precision without anyone
revealing a single score.

The grid: with ``bins`` bins, bin ``i`` is ``[i/bins, (i+1)/bins)``; the last
bin also holds 1.0. A threshold decides on whole bins: **a bin is predicted
positive when its lower edge is >= the threshold**. Thresholds should
therefore be grid edges ``k/bins``; then the histogram metrics equal the exact
ones of scores snapped to the grid, and differ from the raw scores' exact
metrics only by how scores move within one bin (at most ``1/bins``).

Conventions for degenerate data (all documented on :class:`Metrics`):
precision is 0 when nothing is predicted positive, recall is 0 without
positives, F1 is 0 when precision and recall are both 0; ROC AUC is NaN
unless both classes occur; average precision is NaN without positives.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from core.errors import InputError

SCORE_GRID_BINS = 1000
"""Default number of histogram bins over [0, 1]."""

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Metrics:
    """Binary classification metrics at one threshold.

    Parameters
    ----------
    precision
        ``tp / (tp + fp)``; 0.0 when nothing is predicted positive.
    recall
        ``tp / (tp + fn)``; 0.0 when there are no positives.
    f1
        ``2 tp / (2 tp + fp + fn)``; 0.0 when that denominator is 0.
    auc_roc
        Area under the ROC curve, ties counted as one half; NaN unless both
        classes are present.
    auc_pr
        Average precision, step-wise (as scikit-learn's
        ``average_precision_score``); NaN without positives.
    tp, fp, tn, fn
        Confusion-matrix counts.
    num_examples
        Number of scored rows.
    num_positives
        Number of frauds among them.
    threshold
        Decision threshold used.
    """

    precision: float
    recall: float
    f1: float
    auc_roc: float
    auc_pr: float
    tp: int
    fp: int
    tn: int
    fn: int
    num_examples: int
    num_positives: int
    threshold: float

    def to_dict(self) -> dict[str, float | int]:
        """Return the metrics as a flat, JSON-ready dict (NaN stays NaN)."""
        return asdict(self)


def grid_edges(bins: int = SCORE_GRID_BINS) -> npt.NDArray[np.float64]:
    """Return the ``bins + 1`` grid edges ``k / bins``."""
    _check_bins(bins)
    return np.arange(bins + 1, dtype=np.float64) / bins


def _check_bins(bins: int) -> None:
    if not isinstance(bins, int | np.integer) or isinstance(bins, bool) or not 1 <= bins <= 10_000_000:
        raise InputError(f"bins must be an int in [1, 1e7], got {bins!r}")


def _check_threshold(threshold: float) -> float:
    if not isinstance(threshold, float | int | np.floating) or not 0.0 <= float(threshold) <= 1.0:
        raise InputError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def _check_scores(
    scores: npt.ArrayLike, y: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    s = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(y)
    if s.ndim != 1 or labels.shape != s.shape:
        raise InputError(f"scores and y must be 1-D of equal length, got {s.shape} and {labels.shape}")
    if s.size and (not np.all(np.isfinite(s)) or s.min() < 0.0 or s.max() > 1.0):
        raise InputError("scores must be finite and in [0, 1]")
    if not np.all((labels == 0) | (labels == 1)):
        raise InputError("y must hold only 0 and 1")
    return s, labels.astype(np.int64)


def _check_counts(pos_counts: npt.ArrayLike, neg_counts: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    pos = np.asarray(pos_counts)
    neg = np.asarray(neg_counts)
    if pos.ndim != 1 or pos.shape != neg.shape or pos.size == 0:
        raise InputError(f"histograms must be non-empty 1-D of equal length, got {pos.shape} and {neg.shape}")
    for name, arr in (("pos_counts", pos), ("neg_counts", neg)):
        if not np.issubdtype(arr.dtype, np.integer) and not np.all(np.mod(arr, 1) == 0):
            raise InputError(f"{name} must hold whole counts")
        if np.any(arr < 0):
            raise InputError(f"{name} must be non-negative")
    return pos.astype(np.int64), neg.astype(np.int64)


def score_histograms(
    scores: npt.ArrayLike, y: npt.ArrayLike, bins: int = SCORE_GRID_BINS
) -> tuple[IntArray, IntArray]:
    """Count frauds and legitimate rows per score bin.

    Parameters
    ----------
    scores
        Fraud probabilities in [0, 1]; not modified.
    y
        Labels in {0, 1}, same length.
    bins
        Number of equal-width bins over [0, 1].

    Returns
    -------
    pos_counts, neg_counts : numpy.ndarray
        int64 arrays of length ``bins``. Bin ``i`` is ``[i/bins, (i+1)/bins)``,
        the last bin closed.

    Raises
    ------
    InputError
        If shapes differ, a score is outside [0, 1] or a label is not 0/1.
    """
    _check_bins(bins)
    s, labels = _check_scores(scores, y)
    # searchsorted against the same edges the thresholds use, so a score
    # equal to an edge lands in the bin that edge opens (no float drift from
    # floor(score * bins)).
    idx = np.searchsorted(grid_edges(bins), s, side="right") - 1
    idx = np.clip(idx, 0, bins - 1)
    pos = np.bincount(idx[labels == 1], minlength=bins).astype(np.int64)
    neg = np.bincount(idx[labels == 0], minlength=bins).astype(np.int64)
    return pos, neg


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def metrics_from_histograms(
    pos_counts: npt.ArrayLike, neg_counts: npt.ArrayLike, threshold: float
) -> Metrics:
    """Compute :class:`Metrics` from (possibly summed) score histograms.

    Parameters
    ----------
    pos_counts, neg_counts
        Fraud and legitimate counts per bin, as from :func:`score_histograms`
        (or their sums over institutions).
    threshold
        A bin whose lower edge is >= ``threshold`` counts as predicted
        positive; use grid edges ``k/bins``.

    Returns
    -------
    Metrics
        Exact metrics of the scores snapped to the grid.

    Raises
    ------
    InputError
        On malformed counts or a threshold outside [0, 1].
    """
    pos, neg = _check_counts(pos_counts, neg_counts)
    threshold = _check_threshold(threshold)
    bins = pos.size
    predicted = grid_edges(bins)[:-1] >= threshold
    tp = int(pos[predicted].sum())
    fp = int(neg[predicted].sum())
    fn = int(pos[~predicted].sum())
    tn = int(neg[~predicted].sum())
    n_pos = tp + fn
    n_neg = fp + tn

    # ROC AUC as the Mann-Whitney statistic: a fraud outranks every
    # legitimate row in a lower bin and ties half of those in its own bin.
    # Integer arithmetic keeps it exact before the single division.
    if n_pos > 0 and n_neg > 0:
        neg_below = np.concatenate([[0], np.cumsum(neg)[:-1]])
        doubled = 2 * int(np.dot(pos, neg_below)) + int(np.dot(pos, neg))
        auc_roc = doubled / (2.0 * n_pos * n_neg)
    else:
        auc_roc = math.nan

    # Average precision: walk bins from the highest score down; each bin is
    # one threshold and contributes (recall gained) x (precision there).
    if n_pos > 0:
        tp_cum = np.cumsum(pos[::-1])
        fp_cum = np.cumsum(neg[::-1])
        gained = pos[::-1] > 0
        precision_at = tp_cum[gained] / (tp_cum[gained] + fp_cum[gained])
        auc_pr = float(np.sum(pos[::-1][gained] * precision_at) / n_pos)
    else:
        auc_pr = math.nan

    return Metrics(
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, n_pos),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        auc_roc=float(auc_roc),
        auc_pr=auc_pr,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        num_examples=n_pos + n_neg,
        num_positives=n_pos,
        threshold=threshold,
    )


def exact_metrics(scores: npt.ArrayLike, y: npt.ArrayLike, threshold: float) -> Metrics:
    """Compute :class:`Metrics` from raw scores with scikit-learn (for comparison).

    A row is predicted positive when its score is >= ``threshold``; the
    conventions for degenerate data are those of :class:`Metrics`.
    """
    # scikit-learn is imported here only: institutions scoring a model do not need it.
    from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

    s, labels = _check_scores(scores, y)
    threshold = _check_threshold(threshold)
    predicted = (s >= threshold).astype(np.int64)
    if labels.size:
        tn, fp, fn, tp = (int(v) for v in confusion_matrix(labels, predicted, labels=[0, 1]).ravel())
    else:
        tn = fp = fn = tp = 0  # scikit-learn refuses empty input; the counts are plainly zero.
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    auc_roc = float(roc_auc_score(labels, s)) if n_pos > 0 and n_neg > 0 else math.nan
    auc_pr = float(average_precision_score(labels, s)) if n_pos > 0 else math.nan
    return Metrics(
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, n_pos),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        auc_roc=auc_roc,
        auc_pr=auc_pr,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        num_examples=int(labels.size),
        num_positives=n_pos,
        threshold=threshold,
    )


def _edge_counts(pos: IntArray, neg: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """For each edge ``k`` in ``0..bins``: tp, fp and fn when bins ``>= k`` are positive."""
    tp = np.concatenate([np.cumsum(pos[::-1])[::-1], [0]])
    fp = np.concatenate([np.cumsum(neg[::-1])[::-1], [0]])
    fn = int(pos.sum()) - tp
    return tp, fp, fn


def choose_threshold(
    pos_counts: npt.ArrayLike, neg_counts: npt.ArrayLike, fn_cost: float = 10.0, fp_cost: float = 1.0
) -> float:
    """Return the grid edge minimising ``fn_cost * FN + fp_cost * FP``.

    Candidates are all edges ``k/bins`` for ``k = 0..bins`` (1.0 flags
    nothing). Ties go to the lowest threshold, i.e. the higher recall.

    Raises
    ------
    InputError
        On malformed counts or non-positive costs.
    """
    pos, neg = _check_counts(pos_counts, neg_counts)
    for name, cost in (("fn_cost", fn_cost), ("fp_cost", fp_cost)):
        if not isinstance(cost, float | int) or not math.isfinite(cost) or cost <= 0:
            raise InputError(f"{name} must be a positive finite number, got {cost!r}")
    _, fp, fn = _edge_counts(pos, neg)
    cost_at = float(fn_cost) * fn.astype(np.float64) + float(fp_cost) * fp.astype(np.float64)
    return float(grid_edges(pos.size)[int(np.argmin(cost_at))])


def threshold_for_recall(pos_counts: npt.ArrayLike, neg_counts: npt.ArrayLike, target: float) -> float:
    """Return the highest grid edge whose recall is at least ``target``.

    Raises
    ------
    InputError
        On malformed counts, ``target`` outside (0, 1], or no positives
        (recall is then undefined).
    """
    pos, neg = _check_counts(pos_counts, neg_counts)
    if not isinstance(target, float | int) or not 0.0 < float(target) <= 1.0:
        raise InputError(f"target recall must be in (0, 1], got {target!r}")
    n_pos = int(pos.sum())
    if n_pos == 0:
        raise InputError("no positives: recall is undefined, no threshold can be chosen")
    tp, _, _ = _edge_counts(pos, neg)
    # Recall is non-increasing in the edge index; compare in integers.
    ok = np.flatnonzero(tp >= math.ceil(float(target) * n_pos - 1e-9))
    return float(grid_edges(pos.size)[int(ok.max())])


def curves_from_histograms(
    pos_counts: npt.ArrayLike, neg_counts: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return ROC and precision-recall curves at every grid edge.

    Points run from the highest edge (1.0, nothing flagged) to 0.0
    (everything flagged), ``bins + 1`` of them.

    Returns
    -------
    fpr, tpr, precision, recall : numpy.ndarray
        ``fpr`` is NaN without negatives, ``tpr``/``recall`` NaN without
        positives; ``precision`` is 1.0 where nothing is flagged.
    """
    pos, neg = _check_counts(pos_counts, neg_counts)
    tp, fp, _ = _edge_counts(pos, neg)
    tp = tp[::-1].astype(np.float64)
    fp = fp[::-1].astype(np.float64)
    n_pos = float(pos.sum())
    n_neg = float(neg.sum())
    tpr = tp / n_pos if n_pos > 0 else np.full(tp.shape, np.nan)
    fpr = fp / n_neg if n_neg > 0 else np.full(fp.shape, np.nan)
    flagged = tp + fp
    precision = np.divide(tp, flagged, out=np.ones_like(tp), where=flagged > 0)
    return fpr, tpr, precision, tpr.copy()
