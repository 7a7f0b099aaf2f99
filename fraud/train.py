"""Deterministic local training and scoring of the fraud MLP."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from core.errors import ConfigError, InputError
from fraud.constants import MAX_PROX_MU

MAX_POS_WEIGHT = 50.0
"""Cap on the positive-class weight, so a handful of frauds cannot dominate."""


@dataclass(frozen=True)
class TrainConfig:
    """Local training settings.

    Parameters
    ----------
    local_epochs
        Passes over the local data per call of :func:`train_local`.
    batch_size
        Mini-batch size.
    lr
        Adam learning rate.
    seed
        Seed for shuffling and dropout.
    pos_weight
        Weight of the fraud class in the loss; ``None`` computes
        ``n_negative / n_positive`` from the data, capped at
        :data:`MAX_POS_WEIGHT`.
    weight_decay
        L2 penalty (Adam's ``weight_decay``); keeps weights small for secure
        aggregation's clipping range.
    prox_mu
        FedProx proximal coefficient (Li et al., "Federated Optimization in
        Heterogeneous Networks", MLSys 2020, eq. 2): the local objective
        gets ``prox_mu / 2 * ||w - w_start||^2``, where ``w_start`` is the
        model as :func:`train_local` received it (the round's global model).
        It keeps each institution's update close to the global model when
        institutions' data differ. ``0`` (the default) is plain local
        training, bit for bit.
    """

    local_epochs: int = 1
    batch_size: int = 256
    lr: float = 3e-3
    seed: int = 0
    pos_weight: float | None = None
    weight_decay: float = 1e-4
    prox_mu: float = 0.0

    def __post_init__(self) -> None:
        """Validate every field once."""
        problems: list[str] = []
        if not isinstance(self.local_epochs, int) or isinstance(self.local_epochs, bool) or self.local_epochs < 1:
            problems.append(f"local_epochs must be an int >= 1, got {self.local_epochs!r}")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            problems.append(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if not (isinstance(self.lr, float | int) and math.isfinite(self.lr) and 0.0 < self.lr <= 1.0):
            problems.append(f"lr must be in (0, 1], got {self.lr!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            problems.append(f"seed must be a non-negative int, got {self.seed!r}")
        if self.pos_weight is not None and not (
            isinstance(self.pos_weight, float | int) and math.isfinite(self.pos_weight) and self.pos_weight > 0
        ):
            problems.append(f"pos_weight must be None or a positive number, got {self.pos_weight!r}")
        if not (
            isinstance(self.weight_decay, float | int) and math.isfinite(self.weight_decay) and self.weight_decay >= 0
        ):
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (
            isinstance(self.prox_mu, float | int)
            and not isinstance(self.prox_mu, bool)
            and math.isfinite(self.prox_mu)
            and 0 <= self.prox_mu <= MAX_PROX_MU
        ):
            problems.append(f"prox_mu must be in [0, {MAX_PROX_MU:g}], got {self.prox_mu!r}")
        if problems:
            raise ConfigError("invalid TrainConfig: " + "; ".join(problems))


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_local`.

    Parameters
    ----------
    loss
        Mean training loss over the last epoch.
    num_examples
        Number of training rows (the weight of this update in FedAvg).
    """

    loss: float
    num_examples: int


@contextmanager
def _deterministic_torch(seed: int) -> Iterator[None]:
    """Single-threaded, deterministic torch with a seeded RNG; restores all."""
    previous_threads = torch.get_num_threads()
    previous_det = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(previous_det, warn_only=previous_warn)
        torch.set_num_threads(previous_threads)


def _check_xy(model: nn.Module, X: npt.ArrayLike, y: npt.ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    x_t = _check_x(model, X)
    y_arr = np.asarray(y)
    if y_arr.shape != (x_t.shape[0],):
        raise InputError(f"y must have shape ({x_t.shape[0]},), got {y_arr.shape}")
    if not np.all((y_arr == 0) | (y_arr == 1)):
        raise InputError("y must hold only 0 and 1")
    return x_t, torch.tensor(y_arr, dtype=torch.float32)


def _check_x(model: nn.Module, X: npt.ArrayLike) -> torch.Tensor:
    x_arr = np.asarray(X)
    if x_arr.ndim != 2:
        raise InputError(f"X must be 2-D, got shape {x_arr.shape}")
    n_features = getattr(model, "n_features", x_arr.shape[1])
    if x_arr.shape[1] != n_features:
        raise InputError(f"X has {x_arr.shape[1]} features, the model expects {n_features}")
    if not np.all(np.isfinite(x_arr)):
        raise InputError("X has non-finite values")
    # torch.tensor copies, so training never touches the caller's array.
    return torch.tensor(x_arr, dtype=torch.float32)


def effective_pos_weight(y: npt.ArrayLike, config: TrainConfig) -> float:
    """Return the positive-class weight :func:`train_local` uses for labels ``y``."""
    if config.pos_weight is not None:
        return float(config.pos_weight)
    y_arr = np.asarray(y)
    n_pos = float(np.sum(y_arr == 1))
    n_neg = float(np.sum(y_arr == 0))
    if n_pos == 0.0:
        return 1.0
    return float(min(MAX_POS_WEIGHT, max(1.0, n_neg / n_pos)))


def train_local(model: nn.Module, X: npt.ArrayLike, y: npt.ArrayLike, config: TrainConfig) -> TrainResult:
    """Train ``model`` in place on ``(X, y)`` for ``config.local_epochs`` epochs.

    Deterministic: the same model state, data and config give bit-identical
    weights (single thread, deterministic algorithms, seeded shuffling and
    dropout). The global torch RNG, thread count and determinism flag are
    restored afterwards. Adam is used: it learns well in the few local
    epochs a federated round allows.

    With ``config.prox_mu > 0`` the FedProx term
    ``prox_mu / 2 * ||w - w_start||^2`` (``w_start``: the weights ``model``
    holds when called) is added to every mini-batch's objective; the
    reported loss stays the data loss alone. The anchor never leaves this
    function: FedProx changes only what each institution computes locally,
    so it works unchanged under secure aggregation.

    Parameters
    ----------
    model
        The model to train (modified in place).
    X
        Features, shape ``[n, n_features]``; not modified.
    y
        Labels in {0, 1}, shape ``[n]``; not modified.
    config
        Training settings.

    Returns
    -------
    TrainResult
        Mean loss over the last epoch and the number of rows.

    Raises
    ------
    InputError
        If ``X``/``y`` are malformed or empty.
    """
    x_t, y_t = _check_xy(model, X, y)
    n = x_t.shape[0]
    if n == 0:
        raise InputError("cannot train on an empty dataset")
    pos_weight = effective_pos_weight(y, config)
    with _deterministic_torch(config.seed):
        generator = torch.Generator().manual_seed(config.seed)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, dtype=torch.float32))
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        # The FedProx anchor: a detached copy of the weights as received. With
        # prox_mu == 0 no anchor is made and the loop is plain training.
        params = [p for p in model.parameters() if p.requires_grad]
        anchor = [p.detach().clone() for p in params] if config.prox_mu > 0 else None
        model.train()
        epoch_loss = 0.0
        for _ in range(config.local_epochs):
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x_t[idx]), y_t[idx])
                if anchor is None:
                    loss.backward()
                else:
                    proximal = torch.stack([torch.sum((p - a) ** 2) for p, a in zip(params, anchor, strict=True)])
                    (loss + 0.5 * float(config.prox_mu) * proximal.sum()).backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            epoch_loss = total / n
        model.eval()
    return TrainResult(loss=epoch_loss, num_examples=n)


def _forward(model: nn.Module, X: npt.ArrayLike, sigmoid: bool) -> npt.NDArray[np.float64]:
    """The model's outputs on ``X`` (probabilities if ``sigmoid``) in eval mode, without gradients."""
    x_t = _check_x(model, X)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x_t)
            if sigmoid:
                out = torch.sigmoid(out)
            values: npt.NDArray[np.float64] = out.to(torch.float64).numpy().copy()
    finally:
        model.train(was_training)
    return values


def predict_scores(model: nn.Module, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return fraud probabilities (sigmoid of the logits) as float64, shape ``[n]``.

    Runs in eval mode without gradients; the model's mode is restored.
    """
    return _forward(model, X, sigmoid=True)


def evaluate_loss(
    model: nn.Module, X: npt.ArrayLike, y: npt.ArrayLike, pos_weight: float | None = None
) -> float:
    """Return the mean binary cross-entropy of ``model`` on ``(X, y)``.

    Parameters
    ----------
    pos_weight
        Optional positive-class weight; ``None`` (the default) gives the
        plain, unweighted loss, comparable across institutions.
    """
    x_t, y_t = _check_xy(model, X, y)
    if x_t.shape[0] == 0:
        raise InputError("cannot evaluate on an empty dataset")
    weight = None if pos_weight is None else torch.tensor(float(pos_weight), dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            loss = nn.BCEWithLogitsLoss(pos_weight=weight)(model(x_t), y_t)
    finally:
        model.train(was_training)
    return float(loss)


def predict_logits(model: nn.Module, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return the model's raw fraud logits as float64, shape ``[n]`` (eval mode, no gradients)."""
    return _forward(model, X, sigmoid=False)


@dataclass(frozen=True)
class PlattCalibration:
    """An institution's own calibration of a shared model: ``p = sigmoid(scale * logit + offset)``.

    Fitted by :func:`fit_platt_calibration` on the institution's own rows and
    kept there: it is personal (it encodes the institution's fraud rate), so
    it never enters an update or a sum. Within one institution it is monotone
    (``scale > 0``), so it leaves that institution's ranking, AUC-PR and
    AUC-ROC unchanged; what it fixes is the ranking *across* institutions,
    whose fraud rates differ, when their scores are pooled (the combined
    test set, a shared threshold).
    """

    scale: float
    offset: float

    def apply(self, logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Return calibrated probabilities for ``logits``."""
        z = self.scale * np.asarray(logits, dtype=np.float64) + self.offset
        out: npt.NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid, overflow-free
        return out

    def scores(self, model: nn.Module, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Return calibrated fraud probabilities of ``model`` on ``X``."""
        return self.apply(predict_logits(model, X))


def fit_platt_calibration(
    model: nn.Module, X: npt.ArrayLike, y: npt.ArrayLike, iterations: int = 100
) -> PlattCalibration:
    """Fit Platt scaling (Platt 1999) of ``model``'s logits on ``(X, y)`` with the plain, unweighted loss.

    Two parameters, fitted by damped Newton steps in float64 (deterministic,
    no randomness). The unweighted loss makes the probabilities match this
    institution's own fraud rate, whatever ``pos_weight`` training used.
    A tiny ridge pulls towards ``scale = 1, offset = 0`` so separable data
    cannot drive the fit to infinity; a non-positive fitted scale (a model
    that ranks worse than chance here) falls back to shifting the offset
    alone, so calibration never reverses the ranking.

    Raises
    ------
    InputError
        If ``(X, y)`` is malformed or lacks one of the classes.
    """
    x_t, _ = _check_xy(model, X, y)
    y_arr = np.asarray(y, dtype=np.float64)
    if x_t.shape[0] == 0 or y_arr.min() == y_arr.max():
        raise InputError("calibration needs rows of both classes")
    z = predict_logits(model, X)
    ridge = 1e-4
    n = float(len(z))

    def fit(fix_scale: bool) -> tuple[float, float]:
        theta = np.array([1.0, 0.0])
        design = np.stack([z, np.ones_like(z)], axis=1)
        for _ in range(iterations):
            p = 0.5 * (1.0 + np.tanh(0.5 * (design @ theta)))
            grad = design.T @ (p - y_arr) / n + ridge * (theta - np.array([1.0, 0.0]))
            hess = (design * (p * (1.0 - p))[:, None]).T @ design / n + ridge * np.eye(2)
            if fix_scale:
                grad[0], hess[0, :], hess[:, 0], hess[0, 0] = 0.0, 0.0, 0.0, 1.0
            step = np.linalg.solve(hess, grad)
            theta = theta - step
            if float(np.max(np.abs(step))) < 1e-10:
                break
        return float(theta[0]), float(theta[1])

    scale, offset = fit(fix_scale=False)
    if not (math.isfinite(scale) and math.isfinite(offset)) or scale <= 0.0:
        scale, offset = fit(fix_scale=True)
    return PlattCalibration(scale=scale, offset=offset)


def fine_tune_head(model: nn.Module, X: npt.ArrayLike, y: npt.ArrayLike, config: TrainConfig) -> TrainResult:
    """Personalise a shared model: train only its last linear layer on ``(X, y)``, in place.

    Every other parameter is frozen for the call (and unfrozen afterwards),
    so the institution keeps the federation's features and adapts only the
    output layer to its own data. The result is the institution's own: it
    must never be sent into a round. Otherwise as :func:`train_local`.

    Raises
    ------
    ConfigError
        If ``model`` has no linear layer.
    InputError
        As :func:`train_local`.
    """
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not heads:
        raise ConfigError("fine_tune_head needs a model with a linear layer")
    head_ids = {id(p) for p in heads[-1].parameters()}
    frozen = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        return train_local(model, X, y, config)
    finally:
        for p in frozen:
            p.requires_grad_(True)
