"""Model weights, deterministic training, and learning on generated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score

from core.errors import ConfigError
from fraud.features import N_FEATURES, to_arrays
from fraud.generator import split_train_test
from fraud.model import FraudMLP, build_model, get_weights, max_abs_weight, set_weights
from fraud.train import TrainConfig, evaluate_loss, predict_scores, train_local


@pytest.fixture(scope="module")
def bank_a_split(federation_frames: dict[str, pd.DataFrame]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train, test = split_train_test(federation_frames["bank-a"], 0.3, seed=4)
    x_train, y_train = to_arrays(train)
    x_test, y_test = to_arrays(test)
    return x_train, y_train, x_test, y_test


def test_build_model_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)

    a = get_weights(build_model(N_FEATURES, seed=5))
    b = get_weights(build_model(N_FEATURES, seed=5))
    c = get_weights(build_model(N_FEATURES, seed=6))

    assert torch.equal(torch.rand(1), expected_next)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_model_outputs_one_logit_per_row() -> None:
    model = FraudMLP(N_FEATURES)

    out = model(torch.zeros(4, N_FEATURES))

    assert out.shape == (4,)


def test_weights_round_trip_as_copies() -> None:
    source = build_model(N_FEATURES, seed=1)
    target = build_model(N_FEATURES, seed=2)
    weights = get_weights(source)

    set_weights(target, weights)
    weights[0][0, 0] = 99.0

    assert [w.shape for w in get_weights(target)] == [w.shape for w in get_weights(source)]
    assert all(np.array_equal(x, y) for x, y in zip(get_weights(target), get_weights(source), strict=True))
    assert max_abs_weight(get_weights(target)) < 1.0
    assert max_abs_weight(weights) == 99.0


def test_set_weights_names_the_mismatched_layer() -> None:
    model = build_model(N_FEATURES, seed=1)
    weights = get_weights(model)
    weights[2] = np.zeros((5, 5), dtype=np.float32)
    before = get_weights(model)

    with pytest.raises(ConfigError, match=r"net\.3\.weight"):
        set_weights(model, weights)
    with pytest.raises(ConfigError, match="expected 6 weight arrays"):
        set_weights(model, weights[:-1])
    assert all(np.array_equal(x, y) for x, y in zip(get_weights(model), before, strict=True))


def test_invalid_train_config_is_rejected() -> None:
    with pytest.raises(ConfigError, match="local_epochs"):
        TrainConfig(local_epochs=0)
    with pytest.raises(ConfigError, match="pos_weight"):
        TrainConfig(pos_weight=-1.0)


def test_training_is_bit_identical_for_the_same_seed(bank_a_split: tuple[np.ndarray, ...]) -> None:
    x, y = bank_a_split[0][:3_000], bank_a_split[1][:3_000]
    config = TrainConfig(local_epochs=2, batch_size=128, seed=3)
    threads = torch.get_num_threads()

    runs = []
    for _ in range(2):
        model = build_model(N_FEATURES, seed=0)
        result = train_local(model, x, y, config)
        runs.append((get_weights(model), result.loss))

    assert runs[0][1] == runs[1][1]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][0], runs[1][0], strict=True))
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_training_leaves_inputs_untouched_and_reduces_loss(bank_a_split: tuple[np.ndarray, ...]) -> None:
    x, y = bank_a_split[0], bank_a_split[1]
    x_before, y_before = x.copy(), y.copy()
    model = build_model(N_FEATURES, seed=0)
    loss_before = evaluate_loss(model, x, y)

    result = train_local(model, x, y, TrainConfig(local_epochs=2, seed=1))

    assert result.num_examples == len(y)
    assert evaluate_loss(model, x, y) < 0.5 * loss_before
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)


def test_model_learns_fraud_well_above_base_rate(bank_a_split: tuple[np.ndarray, ...]) -> None:
    x_train, y_train, x_test, y_test = bank_a_split
    model = build_model(N_FEATURES, seed=0)

    train_local(model, x_train, y_train, TrainConfig(local_epochs=5, seed=1))
    scores = predict_scores(model, x_test)

    assert scores.dtype == np.float64 and scores.shape == y_test.shape
    assert ((scores >= 0) & (scores <= 1)).all()
    assert average_precision_score(y_test, scores) > 10 * y_test.mean()
    assert max_abs_weight(get_weights(model)) < 10.0
