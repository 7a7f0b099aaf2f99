"""Local-only versus pooled versus federated: one yardstick for every model.

:func:`run_comparison` trains, with the same MLP (:func:`fraud.model.build_model`)
and the same budget (``rounds x local_epochs`` epochs over the data the model
sees):

* ``local:<institution>`` -- each institution alone on its own training set
  (what it gets without federating);
* ``pooled`` -- one MLP on all training sets concatenated (the upper bound
  federation approximates; impossible in practice, it needs the raw rows);
* ``pooled-hgb`` -- scikit-learn's ``HistGradientBoostingClassifier`` on the
  pooled rows, a strong non-neural reference.

:func:`add_model` scores a further model (the federated one from Flower,
given as a module or its weights) on exactly the same data.

Every model is judged the same way (:func:`evaluate_model_scores`):

1. Score the **validation set** (in fedfraud: the union of the institutions'
   synthetic releases) and choose the operating threshold on its score
   histogram: the grid edge minimising ``fn_cost x FN + fp_cost x FP``
   (:func:`fraud.metrics.choose_threshold`, 10:1 by default) or, if a recall
   target is set, the highest edge reaching it
   (:func:`fraud.metrics.threshold_for_recall`).
2. Hold that threshold fixed and score every institution's **test set**;
   per-institution metrics come from its own histogram, the combined metrics
   from the summed histograms (equal to the metrics of the concatenated
   scores snapped to the grid).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from core.errors import ConfigError, InputError
from fraud.metrics import (
    SCORE_GRID_BINS,
    Metrics,
    choose_threshold,
    metrics_from_histograms,
    score_histograms,
    threshold_for_recall,
)
from fraud.model import FraudMLP, build_model, set_weights
from fraud.train import TrainConfig, predict_scores, train_local

XY = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]
IntArray = npt.NDArray[np.int64]

POOLED = "pooled"
POOLED_HGB = "pooled-hgb"
LOCAL_PREFIX = "local:"


@dataclass(frozen=True)
class ThresholdRule:
    """How the operating threshold is chosen on the validation set.

    Parameters
    ----------
    fn_cost, fp_cost
        Costs of a missed fraud and of a false alarm (used when
        ``recall_target`` is ``None``).
    recall_target
        If set, in (0, 1]: the highest threshold whose validation recall
        reaches it.
    """

    fn_cost: float = 10.0
    fp_cost: float = 1.0
    recall_target: float | None = None

    def __post_init__(self) -> None:
        """Validate once."""
        problems = []
        for name in ("fn_cost", "fp_cost"):
            value = getattr(self, name)
            if not isinstance(value, float | int) or not math.isfinite(value) or value <= 0:
                problems.append(f"{name} must be a positive number, got {value!r}")
        if self.recall_target is not None and not (
            isinstance(self.recall_target, float | int) and 0.0 < float(self.recall_target) <= 1.0
        ):
            problems.append(f"recall_target must be None or in (0, 1], got {self.recall_target!r}")
        if problems:
            raise ConfigError("invalid ThresholdRule: " + "; ".join(problems))

    def describe(self) -> str:
        """Return a sentence for reports."""
        if self.recall_target is not None:
            return f"highest score-grid edge with recall >= {self.recall_target:g} on the validation set"
        return (
            f"score-grid edge minimising {self.fn_cost:g} x FN + {self.fp_cost:g} x FP "
            "on the validation set"
        )

    def choose(self, pos: IntArray, neg: IntArray) -> float:
        """Return the threshold for validation histograms ``pos``/``neg``."""
        if self.recall_target is not None:
            return threshold_for_recall(pos, neg, float(self.recall_target))
        return choose_threshold(pos, neg, fn_cost=float(self.fn_cost), fp_cost=float(self.fp_cost))


@dataclass(frozen=True)
class ModelEvaluation:
    """One model's results at its validation-chosen threshold.

    Parameters
    ----------
    name
        Model name (``pooled``, ``pooled-hgb``, ``local:<institution>``, ``federated``...).
    threshold
        Chosen on the validation set, then held fixed.
    validation
        Metrics on the validation set at that threshold.
    combined
        Metrics on the combined test set (summed histograms).
    per_institution
        Metrics on each institution's test set.
    histograms
        ``(pos_counts, neg_counts)`` of the combined test set, for curves.
    institution_histograms
        The same per institution.
    """

    name: str
    threshold: float
    validation: Metrics
    combined: Metrics
    per_institution: dict[str, Metrics]
    histograms: tuple[IntArray, IntArray]
    institution_histograms: dict[str, tuple[IntArray, IntArray]]


@dataclass(frozen=True)
class _EvalData:
    test_sets: dict[str, XY]
    validation: XY
    n_features: int


@dataclass(frozen=True)
class ComparisonResult:
    """Every model's :class:`ModelEvaluation` on the same data, plus the settings used.

    ``models`` keeps insertion order: local models, ``pooled``, ``pooled-hgb``,
    then any added with :func:`add_model`.
    """

    institutions: tuple[str, ...]
    models: dict[str, ModelEvaluation]
    threshold_rule: ThresholdRule
    settings: dict[str, Any]
    base_rate: float
    test_sizes: dict[str, tuple[int, int]]
    """Per institution: (rows, frauds) of its test set."""
    validation_size: tuple[int, int]
    """(rows, frauds) of the validation set."""
    _data: _EvalData = field(repr=False, compare=False)

    def auc_pr_table(self) -> dict[str, float]:
        """Return ``{model: AUC-PR on the combined test set}``."""
        return {name: ev.combined.auc_pr for name, ev in self.models.items()}


def _check_xy(name: str, xy: Any, n_features: int | None) -> XY:
    if not isinstance(xy, tuple) or len(xy) != 2:
        raise InputError(f"{name}: expected an (X, y) pair")
    X = np.asarray(xy[0], dtype=np.float32)
    y = np.asarray(xy[1], dtype=np.float32)
    if X.ndim != 2 or y.shape != (X.shape[0],) or X.shape[0] == 0:
        raise InputError(f"{name}: X must be 2-D and non-empty with y of matching length, got {X.shape}, {y.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise InputError(f"{name}: {X.shape[1]} features, expected {n_features}")
    if not np.all((y == 0) | (y == 1)):
        raise InputError(f"{name}: y must hold only 0 and 1")
    return X, y


def evaluate_model_scores(
    name: str,
    validation_scores: npt.ArrayLike,
    validation_y: npt.ArrayLike,
    test_scores: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    rule: ThresholdRule | None = None,
    bins: int = SCORE_GRID_BINS,
) -> ModelEvaluation:
    """Choose a threshold on validation scores, then score every test set at it.

    Parameters
    ----------
    name
        Model name.
    validation_scores, validation_y
        Scores in [0, 1] and labels of the validation set.
    test_scores
        ``{institution: (scores, labels)}`` of each test set.
    rule
        Threshold rule (default: cost 10:1).
    bins
        Score-grid bins.

    Raises
    ------
    InputError
        On malformed scores or labels, or no test sets.
    """
    rule = rule or ThresholdRule()
    if not test_scores:
        raise InputError("no test sets to evaluate on")
    v_pos, v_neg = score_histograms(validation_scores, validation_y, bins)
    threshold = rule.choose(v_pos, v_neg)
    per_hist = {inst: score_histograms(s, y, bins) for inst, (s, y) in test_scores.items()}
    pos = np.sum([h[0] for h in per_hist.values()], axis=0).astype(np.int64)
    neg = np.sum([h[1] for h in per_hist.values()], axis=0).astype(np.int64)
    return ModelEvaluation(
        name=name,
        threshold=threshold,
        validation=metrics_from_histograms(v_pos, v_neg, threshold),
        combined=metrics_from_histograms(pos, neg, threshold),
        per_institution={inst: metrics_from_histograms(p, n, threshold) for inst, (p, n) in per_hist.items()},
        histograms=(pos, neg),
        institution_histograms=per_hist,
    )


def _evaluate_scorer(name: str, score: Any, data: _EvalData, rule: ThresholdRule) -> ModelEvaluation:
    X_val, y_val = data.validation
    tests = {inst: (score(X), y) for inst, (X, y) in data.test_sets.items()}
    return evaluate_model_scores(name, score(X_val), y_val, tests, rule)


def _train_mlp(X: npt.NDArray[np.float32], y: npt.NDArray[np.float32], config: TrainConfig, seed: int) -> FraudMLP:
    model = build_model(X.shape[1], seed)
    train_local(model, X, y, config)
    return model


def run_comparison(
    train_sets: Mapping[str, XY],
    test_sets: Mapping[str, XY],
    validation: XY,
    rounds: int,
    local_epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    rule: ThresholdRule | None = None,
) -> ComparisonResult:
    """Train local-only, pooled and pooled-HGB models and evaluate them identically.

    Parameters
    ----------
    train_sets, test_sets
        ``{institution: (X, y)}``, same institutions, same feature width.
    validation
        ``(X, y)`` the threshold is chosen on (the synthetic union).
    rounds, local_epochs
        The federated budget; every MLP here trains ``rounds x local_epochs`` epochs.
    batch_size, lr, seed
        MLP training settings (and the initialisation and HGB seed).
    rule
        Threshold rule (default: cost 10:1).

    Raises
    ------
    ConfigError
        On bad settings or mismatched institutions.
    InputError
        On malformed arrays.
    """
    rule = rule or ThresholdRule()
    for label, value in (("rounds", rounds), ("local_epochs", local_epochs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{label} must be an int >= 1, got {value!r}")
    if not train_sets or set(train_sets) != set(test_sets):
        raise ConfigError(
            f"train and test sets must name the same institutions: {sorted(train_sets)} vs {sorted(test_sets)}"
        )
    config = TrainConfig(local_epochs=rounds * local_epochs, batch_size=batch_size, lr=lr, seed=seed)
    names = tuple(train_sets)
    first = _check_xy(f"train set {names[0]!r}", train_sets[names[0]], None)
    n_features = first[0].shape[1]
    trains = {n: _check_xy(f"train set {n!r}", train_sets[n], n_features) for n in names}
    tests = {n: _check_xy(f"test set {n!r}", test_sets[n], n_features) for n in names}
    data = _EvalData(tests, _check_xy("validation set", validation, n_features), n_features)

    models: dict[str, ModelEvaluation] = {}
    for inst, (X, y) in trains.items():
        mlp = _train_mlp(X, y, config, seed)
        models[LOCAL_PREFIX + inst] = _evaluate_scorer(
            LOCAL_PREFIX + inst, lambda A, m=mlp: predict_scores(m, A), data, rule
        )
    X_all = np.concatenate([xy[0] for xy in trains.values()])
    y_all = np.concatenate([xy[1] for xy in trains.values()])
    pooled = _train_mlp(X_all, y_all, config, seed)
    models[POOLED] = _evaluate_scorer(POOLED, lambda A: predict_scores(pooled, A), data, rule)
    # Imported here: the ServerApp imports this module for ThresholdRule only,
    # and scikit-learn (with SciPy) took 1.1 s of every ServerApp's start-up.
    from sklearn.ensemble import HistGradientBoostingClassifier

    hgb = HistGradientBoostingClassifier(random_state=seed).fit(X_all, y_all.astype(np.int64))
    models[POOLED_HGB] = _evaluate_scorer(
        POOLED_HGB, lambda A: np.clip(hgb.predict_proba(A)[:, 1], 0.0, 1.0), data, rule
    )

    n_test = sum(len(y) for _, y in tests.values())
    frauds = sum(int(y.sum()) for _, y in tests.values())
    return ComparisonResult(
        institutions=names,
        models=models,
        threshold_rule=rule,
        settings={
            "rounds": rounds,
            "local_epochs": local_epochs,
            "total_epochs": rounds * local_epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "n_features": n_features,
            "train_sizes": {n: int(len(xy[1])) for n, xy in trains.items()},
        },
        base_rate=frauds / n_test,
        test_sizes={n: (int(len(y)), int(y.sum())) for n, (_, y) in tests.items()},
        validation_size=(int(len(data.validation[1])), int(data.validation[1].sum())),
        _data=data,
    )


def model_from_weights(weights: Sequence[npt.ArrayLike], n_features: int) -> FraudMLP:
    """Rebuild a :class:`FraudMLP` from its weights (``state_dict`` order), inferring the hidden widths.

    Raises
    ------
    ConfigError
        If the arrays do not describe a FraudMLP with ``n_features`` inputs.
    """
    arrays = [np.asarray(w) for w in weights]
    matrices = [a for a in arrays if a.ndim == 2]
    if len(matrices) < 2 or len(arrays) != 2 * len(matrices):
        raise ConfigError(f"weights do not describe a FraudMLP: {len(arrays)} arrays, {len(matrices)} matrices")
    if matrices[0].shape[1] != n_features or matrices[-1].shape[0] != 1:
        raise ConfigError(
            f"weights expect {matrices[0].shape[1]} inputs and {matrices[-1].shape[0]} outputs; "
            f"the data has {n_features} features and the model one output"
        )
    model = build_model(n_features, seed=0, hidden=[m.shape[0] for m in matrices[:-1]])
    set_weights(model, arrays)
    model.eval()
    return model


def add_model(
    result: ComparisonResult,
    name: str,
    model: nn.Module | Sequence[npt.ArrayLike] | Callable[[npt.NDArray[np.float32]], npt.ArrayLike],
) -> ComparisonResult:
    """Score an externally trained model (e.g. the federated one) exactly like the others.

    Parameters
    ----------
    result
        A :func:`run_comparison` result (it keeps its validation and test sets).
    name
        A new model name (e.g. ``"federated"``).
    model
        A torch module returning logits, a FraudMLP's weights in
        ``state_dict`` order (as Flower hands them over), or a function
        from feature rows to scores (a boosted-tree ensemble's ``predict``).

    Returns
    -------
    ComparisonResult
        A new result with the model appended; ``result`` is unchanged.

    Raises
    ------
    ConfigError
        If the name is taken or the weights do not fit the data.
    """
    if not isinstance(name, str) or not name or name in result.models:
        raise ConfigError(f"model name must be new and non-empty, got {name!r} (taken: {list(result.models)})")
    if callable(model) and not isinstance(model, nn.Module):
        # Any scorer of feature rows (e.g. a boosted-tree ensemble's predict).
        evaluation = _evaluate_scorer(name, model, result._data, result.threshold_rule)
        return replace(result, models={**result.models, name: evaluation})
    module = model if isinstance(model, nn.Module) else model_from_weights(model, result._data.n_features)
    with torch.no_grad():
        evaluation = _evaluate_scorer(name, lambda A: predict_scores(module, A), result._data, result.threshold_rule)
    return replace(result, models={**result.models, name: evaluation})
