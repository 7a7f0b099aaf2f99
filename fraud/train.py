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

from fedfraud.errors import ConfigError, InputError

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
    """

    local_epochs: int = 1
    batch_size: int = 256
    lr: float = 3e-3
    seed: int = 0
    pos_weight: float | None = None
    weight_decay: float = 1e-4

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
        model.train()
        epoch_loss = 0.0
        for _ in range(config.local_epochs):
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x_t[idx]), y_t[idx])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            epoch_loss = total / n
        model.eval()
    return TrainResult(loss=epoch_loss, num_examples=n)


def predict_scores(model: nn.Module, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return fraud probabilities (sigmoid of the logits) as float64, shape ``[n]``.

    Runs in eval mode without gradients; the model's mode is restored.
    """
    x_t = _check_x(model, X)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            scores = torch.sigmoid(model(x_t)).to(torch.float64).numpy().copy()
    finally:
        model.train(was_training)
    return scores


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
