"""The fraud MLP and helpers to move its weights in and out as numpy arrays."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from core.errors import ConfigError


class FraudMLP(nn.Module):
    """A small multi-layer perceptron that outputs one fraud logit per row.

    Parameters
    ----------
    n_features
        Number of input features.
    hidden
        Widths of the hidden layers.
    dropout
        Dropout probability after each hidden layer, in [0, 1).
    """

    def __init__(self, n_features: int, hidden: Sequence[int] = (64, 32), dropout: float = 0.1) -> None:
        super().__init__()
        if not isinstance(n_features, int) or isinstance(n_features, bool) or n_features < 1:
            raise ConfigError(f"n_features must be a positive int, got {n_features!r}")
        widths = [int(h) for h in hidden]
        if not widths or any(w < 1 for w in widths):
            raise ConfigError(f"hidden must be non-empty positive widths, got {tuple(hidden)!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        layers: list[nn.Module] = []
        width_in = n_features
        for width in widths:
            layers += [nn.Linear(width_in, width), nn.ReLU(), nn.Dropout(float(dropout))]
            width_in = width
        layers.append(nn.Linear(width_in, 1))
        self.net = nn.Sequential(*layers)
        self.n_features = n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits of shape ``[n]`` for inputs of shape ``[n, n_features]``."""
        out: torch.Tensor = self.net(x).squeeze(-1)
        return out


def initial_model_seed(seed: int, institutions: Sequence[str]) -> int:
    """The seed of a federation's initial global model: the run seed and the cohort.

    Each institution refuses to contribute to a sum over the same model with a
    different set of partners (the difference of two such sums would reveal
    one institution's contribution). Runs of the same seed with different
    institutions therefore start from different models, while a rerun with
    the same institutions starts from the same one.
    """
    digest = hashlib.sha256("\n".join(sorted(institutions)).encode("utf-8")).digest()
    return (seed * 1_000_003 + int.from_bytes(digest[:4], "big")) % 2**31


def build_model(
    n_features: int, seed: int, hidden: Sequence[int] = (64, 32), dropout: float = 0.1
) -> FraudMLP:
    """Build a :class:`FraudMLP` with a deterministic initialisation.

    The seed drives a forked torch RNG, so the global torch RNG state is the
    same after the call as before it.

    Parameters
    ----------
    n_features
        Number of input features.
    seed
        Initialisation seed; the same seed gives identical weights.
    hidden, dropout
        As for :class:`FraudMLP`.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FraudMLP(n_features, hidden, dropout)
    return model


def get_weights(model: nn.Module) -> list[npt.NDArray[np.float32]]:
    """Return copies of the model's tensors, in ``state_dict`` order."""
    return [t.detach().cpu().numpy().copy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[npt.ArrayLike]) -> None:
    """Load ``weights`` (in ``state_dict`` order) into ``model``.

    All shapes are checked before anything is loaded, so on error the model
    is unchanged. The caller's arrays are copied, never aliased.

    Raises
    ------
    ConfigError
        If the number of arrays differs, or naming the first layer whose
        shape differs, or if a value is not finite.
    """
    state = model.state_dict()
    if len(weights) != len(state):
        raise ConfigError(f"expected {len(state)} weight arrays, got {len(weights)}")
    new_state: dict[str, torch.Tensor] = {}
    for (name, current), array in zip(state.items(), weights, strict=True):
        arr = np.asarray(array)
        if tuple(arr.shape) != tuple(current.shape):
            raise ConfigError(
                f"layer {name!r}: expected shape {tuple(current.shape)}, got {tuple(arr.shape)}"
            )
        if not np.all(np.isfinite(arr)):
            raise ConfigError(f"layer {name!r}: weights must be finite")
        new_state[name] = torch.tensor(arr, dtype=current.dtype)
    model.load_state_dict(new_state)


def max_abs_weight(weights: Sequence[npt.ArrayLike]) -> float:
    """Return the largest absolute value over all arrays (0.0 if there are none)."""
    largest = 0.0
    for array in weights:
        arr = np.asarray(array)
        if arr.size:
            largest = max(largest, float(np.max(np.abs(arr))))
    return largest
