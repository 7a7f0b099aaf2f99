"""FedProx in local training, and what an institution may keep to itself (calibration, a fine-tuned head)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from core.errors import ConfigError, InputError
from federation.settings import RunSettings
from fedfraud.simulation import default_run_config
from fraud.features import N_FEATURES, to_arrays
from fraud.model import build_model, get_weights, set_weights
from fraud.train import (
    MAX_PROX_MU,
    TrainConfig,
    effective_pos_weight,
    fine_tune_head,
    fit_platt_calibration,
    predict_logits,
    predict_scores,
    train_local,
)

Arrays = list[npt.NDArray[np.float32]]


@pytest.fixture(scope="module")
def data(federation_frames: dict[str, pd.DataFrame]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """3,000 rows of bank-a (about 60 frauds)."""
    x, y = to_arrays(federation_frames["bank-a"])
    return x[:3_000], y[:3_000]


@pytest.fixture(scope="module")
def global_weights(data: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]) -> Arrays:
    """A 'global model' that has already learned something (one epoch from seed 0)."""
    model = build_model(N_FEATURES, seed=0)
    train_local(model, *data, TrainConfig(local_epochs=1, seed=9))
    return get_weights(model)


def _train_from(weights: Arrays, x: npt.ArrayLike, y: npt.ArrayLike, config: TrainConfig) -> Arrays:
    model = build_model(N_FEATURES, seed=0)
    set_weights(model, weights)
    train_local(model, x, y, config)
    return get_weights(model)


def _distance(a: Arrays, b: Arrays) -> float:
    return float(np.sqrt(sum(np.sum((x.astype(np.float64) - y) ** 2) for x, y in zip(a, b, strict=True))))


def _plain_reference(weights: Arrays, x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], config: TrainConfig) -> Arrays:
    """Plain (non-FedProx) mini-batch Adam, written out independently of train_local."""
    model = build_model(N_FEATURES, seed=0)
    set_weights(model, weights)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            generator = torch.Generator().manual_seed(config.seed)
            pos_weight = torch.tensor(effective_pos_weight(y, config), dtype=torch.float32)
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
            optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            x_t, y_t = torch.tensor(x), torch.tensor(y)
            model.train()
            for _ in range(config.local_epochs):
                order = torch.randperm(len(y), generator=generator)
                for start in range(0, len(y), config.batch_size):
                    idx = order[start : start + config.batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    loss_fn(model(x_t[idx]), y_t[idx]).backward()
                    optimizer.step()
    finally:
        torch.use_deterministic_algorithms(det)
        torch.set_num_threads(threads)
    return get_weights(model)


# ---------------------------------------------------------------------------
# FedProx
# ---------------------------------------------------------------------------


def test_mu_zero_is_plain_training_bit_for_bit(data: tuple[npt.NDArray[np.float32], ...], global_weights: Arrays) -> None:
    config = TrainConfig(local_epochs=2, batch_size=128, seed=5, prox_mu=0.0)

    trained = _train_from(global_weights, *data, config)

    reference = _plain_reference(global_weights, data[0], data[1], config)
    default = _train_from(global_weights, *data, TrainConfig(local_epochs=2, batch_size=128, seed=5))
    assert all(np.array_equal(a, b) for a, b in zip(trained, reference, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(trained, default, strict=True))


def test_proximal_term_changes_training_deterministically(
    data: tuple[npt.NDArray[np.float32], ...], global_weights: Arrays
) -> None:
    config = TrainConfig(local_epochs=1, batch_size=128, seed=5, prox_mu=0.5)

    first = _train_from(global_weights, *data, config)
    second = _train_from(global_weights, *data, config)
    plain = _train_from(global_weights, *data, TrainConfig(local_epochs=1, batch_size=128, seed=5))

    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, plain, strict=True))


def test_larger_mu_keeps_weights_closer_to_the_global_model(
    data: tuple[npt.NDArray[np.float32], ...], global_weights: Arrays
) -> None:
    distances = {
        mu: _distance(_train_from(global_weights, *data, TrainConfig(local_epochs=2, seed=5, prox_mu=mu)), global_weights)
        for mu in (0.0, 1.0, MAX_PROX_MU)
    }

    assert distances[0.0] > distances[1.0] > distances[MAX_PROX_MU]
    assert distances[MAX_PROX_MU] < 0.25 * distances[0.0]


def test_reported_loss_is_the_data_loss_only(data: tuple[npt.NDArray[np.float32], ...], global_weights: Arrays) -> None:
    # With a huge mu the weights barely move, so the data loss stays near the
    # global model's; had the proximal term been reported, mu would show in it.
    model = build_model(N_FEATURES, seed=0)
    set_weights(model, global_weights)
    plain = train_local(model, *data, TrainConfig(local_epochs=1, seed=5)).loss
    set_weights(model, global_weights)
    prox = train_local(model, *data, TrainConfig(local_epochs=1, seed=5, prox_mu=MAX_PROX_MU)).loss

    assert prox == pytest.approx(plain, rel=0.5)


@pytest.mark.parametrize("bad", [-0.1, MAX_PROX_MU * 2, float("nan"), float("inf"), True])
def test_invalid_prox_mu_is_rejected(bad: object) -> None:
    with pytest.raises(ConfigError, match="prox_mu"):
        TrainConfig(prox_mu=bad)  # type: ignore[arg-type]


def test_run_config_key_fedprox_mu_is_read_and_checked() -> None:
    config = default_run_config()

    assert RunSettings.from_run_config(config).fedprox_mu == float(config["fedprox-mu"])
    assert RunSettings.from_run_config({**config, "fedprox-mu": 0}).fedprox_mu == 0.0
    for bad in (-1.0, MAX_PROX_MU + 1, "0.1", True):
        with pytest.raises(ConfigError, match="'fedprox-mu'"):
            RunSettings.from_run_config({**config, "fedprox-mu": bad})


# ---------------------------------------------------------------------------
# Kept at the institution: calibration and a personalised head
# ---------------------------------------------------------------------------


def test_platt_calibration_keeps_the_ranking_and_matches_the_local_fraud_rate(
    data: tuple[npt.NDArray[np.float32], ...], global_weights: Arrays
) -> None:
    x, y = data
    model = build_model(N_FEATURES, seed=0)
    set_weights(model, global_weights)

    calibration = fit_platt_calibration(model, x, y)
    calibrated = calibration.scores(model, x)

    assert calibration.scale > 0
    # Monotone: the same order as the model's own logits (float32 scores
    # round ties into some neighbours; the logits do not).
    raw = predict_scores(model, x)
    logits = predict_logits(model, x)
    assert np.array_equal(np.argsort(logits, kind="stable"), np.argsort(calibrated, kind="stable"))
    assert average_precision_score(y, calibrated) == pytest.approx(average_precision_score(y, raw))
    # Fitted with the unweighted loss: the mean probability is the local fraud rate.
    assert float(calibrated.mean()) == pytest.approx(float(y.mean()), rel=0.05)
    np.testing.assert_allclose(calibrated, calibration.apply(predict_logits(model, x)))


def test_calibration_needs_both_classes(data: tuple[npt.NDArray[np.float32], ...]) -> None:
    x, _ = data
    with pytest.raises(InputError, match="both classes"):
        fit_platt_calibration(build_model(N_FEATURES, seed=0), x, np.zeros(len(x), dtype=np.float32))


def test_fine_tune_head_changes_only_the_last_layer(
    data: tuple[npt.NDArray[np.float32], ...], global_weights: Arrays
) -> None:
    model = build_model(N_FEATURES, seed=0)
    set_weights(model, global_weights)

    fine_tune_head(model, *data, TrainConfig(local_epochs=1, seed=5))
    after = get_weights(model)

    *body_before, head_w_before, head_b_before = global_weights
    *body_after, head_w_after, head_b_after = after
    assert all(np.array_equal(a, b) for a, b in zip(body_before, body_after, strict=True))
    assert not np.array_equal(head_w_before, head_w_after)
    assert all(p.requires_grad for p in model.parameters())
