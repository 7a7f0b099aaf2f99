"""Comparison of local-only, pooled and external (federated) models on the same data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from core.errors import ConfigError
from fraud.compare import (
    POOLED,
    POOLED_HGB,
    ComparisonResult,
    ThresholdRule,
    add_model,
    evaluate_model_scores,
    run_comparison,
)
from fraud.features import N_FEATURES, to_arrays
from fraud.generator import split_train_test
from fraud.metrics import exact_metrics
from fraud.model import build_model, get_weights
from fraud.train import TrainConfig, predict_scores, train_local

SETTINGS = {"rounds": 2, "local_epochs": 1, "batch_size": 256, "lr": 3e-3, "seed": 4}


@pytest.fixture(scope="module")
def data(federation_frames: dict[str, pd.DataFrame]) -> tuple[dict, dict, tuple]:
    trains, tests, vals = {}, {}, []
    for name, frame in federation_frames.items():
        small = frame.iloc[:6_000]
        train, rest = split_train_test(small, 0.4, 1)
        val, test = split_train_test(rest, 0.5, 2)
        trains[name], tests[name] = to_arrays(train), to_arrays(test)
        vals.append(val)
    return trains, tests, to_arrays(pd.concat(vals, ignore_index=True))


@pytest.fixture(scope="module")
def result(data: tuple[dict, dict, tuple]) -> ComparisonResult:
    trains, tests, validation = data
    return run_comparison(trains, tests, validation, **SETTINGS)


def test_every_model_is_evaluated_at_one_validation_threshold(result: ComparisonResult) -> None:
    assert list(result.models) == ["local:bank-a", "local:bank-b", "local:insurer-c", POOLED, POOLED_HGB]
    for evaluation in result.models.values():
        assert evaluation.validation.threshold == evaluation.threshold
        assert evaluation.combined.threshold == evaluation.threshold
        assert {m.threshold for m in evaluation.per_institution.values()} == {evaluation.threshold}
    assert result.settings["total_epochs"] == 2


def test_combined_histograms_are_the_sum_of_institutions(result: ComparisonResult) -> None:
    evaluation = result.models[POOLED]
    pos = sum(h[0] for h in evaluation.institution_histograms.values())

    np.testing.assert_array_equal(evaluation.histograms[0], pos)
    assert evaluation.combined.num_examples == sum(n for n, _ in result.test_sizes.values())
    assert evaluation.combined.fn == sum(m.fn for m in evaluation.per_institution.values())


def test_an_external_model_is_scored_like_the_pooled_one(
    data: tuple[dict, dict, tuple], result: ComparisonResult
) -> None:
    # Arrange: retrain the pooled MLP by hand (training is deterministic).
    trains, tests, validation = data
    X = np.concatenate([xy[0] for xy in trains.values()])
    y = np.concatenate([xy[1] for xy in trains.values()])
    model = build_model(N_FEATURES, SETTINGS["seed"])
    train_local(model, X, y, TrainConfig(local_epochs=2, batch_size=256, lr=3e-3, seed=SETTINGS["seed"]))

    # Act: hand over weights, as Flower does.
    extended = add_model(result, "federated", get_weights(model))

    # Assert: same numbers as pooled; the original result is untouched.
    assert extended.models["federated"].combined == result.models[POOLED].combined
    assert "federated" not in result.models
    with pytest.raises(ConfigError, match="must be new"):
        add_model(extended, "federated", model)


def test_pooled_metrics_from_counts_match_scikit_learn_on_concatenated_scores(
    data: tuple[dict, dict, tuple], result: ComparisonResult
) -> None:
    trains, tests, validation = data
    model = build_model(N_FEATURES, 9)
    X = np.concatenate([xy[0] for xy in trains.values()])
    y = np.concatenate([xy[1] for xy in trains.values()])
    train_local(model, X, y, TrainConfig(local_epochs=1, seed=9))
    test_scores = {name: (predict_scores(model, X_t), y_t) for name, (X_t, y_t) in tests.items()}

    evaluation = evaluate_model_scores("m", predict_scores(model, validation[0]), validation[1], test_scores)

    all_scores = np.concatenate([s for s, _ in test_scores.values()])
    all_y = np.concatenate([t for _, t in test_scores.values()])
    exact = exact_metrics(all_scores, all_y, evaluation.threshold)
    got = evaluation.combined
    assert (got.tp, got.fp, got.tn, got.fn) == (exact.tp, exact.fp, exact.tn, exact.fn)
    assert got.auc_pr == pytest.approx(average_precision_score(all_y, all_scores), abs=0.01)
    assert got.auc_roc == pytest.approx(exact.auc_roc, abs=0.005)


def test_recall_target_rule(data: tuple[dict, dict, tuple], result: ComparisonResult) -> None:
    _, tests, validation = data
    rng = np.random.default_rng(0)
    scores = {n: (rng.random(len(y)), y) for n, (_, y) in tests.items()}

    evaluation = evaluate_model_scores(
        "random", rng.random(len(validation[1])), validation[1], scores, ThresholdRule(recall_target=0.9)
    )

    assert evaluation.validation.recall >= 0.9
    with pytest.raises(ConfigError, match="recall_target"):
        ThresholdRule(recall_target=1.5)


def test_pooled_beats_the_base_rate(result: ComparisonResult) -> None:
    assert result.models[POOLED].combined.auc_pr > 3 * result.base_rate
    assert result.models[POOLED_HGB].combined.auc_pr > 3 * result.base_rate


def test_mismatched_institutions_are_refused(data: tuple[dict, dict, tuple]) -> None:
    trains, tests, validation = data
    with pytest.raises(ConfigError, match="same institutions"):
        run_comparison(trains, {"bank-a": tests["bank-a"]}, validation, **SETTINGS)
