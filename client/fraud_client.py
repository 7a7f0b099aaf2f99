"""The institution's Flower client: local training and local evaluation.

Training returns the full updated weights; Flower's ``secaggplus_mod`` (outside
this class) quantizes and masks them, so the server only ever sees the sum.
Evaluation returns score *counts* on a fixed grid, never scores or rows, so
the server can compute exact pooled metrics from the summed counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from flwr.app import Context
from flwr.client import NumPyClient

from fedfraud.errors import InputError
from fedfraud.settings import Aggregation, RunSettings
from fedfraud.wire import encode_counts
from fraud.features import FEATURE_COLUMNS, to_arrays
from fraud.metrics import SCORE_GRID_BINS, score_histograms
from fraud.model import build_model, get_weights, set_weights
from fraud.train import TrainConfig, evaluate_loss, predict_scores, train_local
from secagg.params import check_update_in_range, check_weight

from .gate import RoundView, check_round
from .node import InstitutionNode, require_file
from .secagg_adapter import observed_secagg

Arrays = list[npt.NDArray[np.float32]]


def load_split(path: Path, what: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Read one of the institution's CSV splits into model arrays."""
    require_file(path, what)
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{what} {path} cannot be read as CSV: {exc}") from exc
    if frame.empty:
        raise InputError(f"{what} {path} has no rows")
    return to_arrays(frame)


def round_seed(settings: RunSettings, institution_id: str, server_round: int) -> int:
    """A distinct, reproducible training seed per run, institution and round."""
    index = settings.institutions.index(institution_id)
    return settings.seed * 1_000_003 + server_round * 1_009 + index


class FraudClient(NumPyClient):
    """One institution's participation in a run."""

    def __init__(self, context: Context, settings: RunSettings, node: InstitutionNode) -> None:
        self.context = context
        self.settings = settings
        self.node = node

    def fit(
        self, parameters: Arrays, config: dict[str, bool | bytes | float | int | str]
    ) -> tuple[Arrays, int, dict[str, bool | bytes | float | int | str]]:
        """Train locally on this round's global model, inside SecAgg+ only."""
        # 1. The round must run inside SecAgg+, with parameters this
        #    institution agreed to, before it touches its data.
        server_round = int(config.get("server-round", 0))
        observed = check_round(
            RoundView(
                self.node.institution_id,
                server_round,
                None if self.settings.aggregation is Aggregation.UNSAFE_PLAIN
                else observed_secagg(self.context),
            ),
            self.settings,
        )
        # 2. Train on the private training split.
        features, labels = load_split(self.node.train_path, "training data")
        model = build_model(len(FEATURE_COLUMNS), seed=self.settings.seed)
        set_weights(model, parameters)
        train_config = TrainConfig(
            local_epochs=self.settings.local_epochs,
            batch_size=self.settings.batch_size,
            lr=self.settings.lr,
            seed=round_seed(self.settings, self.node.institution_id, server_round),
        )
        result = train_local(model, features, labels, train_config)
        weights = get_weights(model)
        # 3. Refuse to send anything SecAgg+ would clip or overflow on.
        check_weight(result.num_examples, observed.max_weight)
        check_update_in_range(weights, observed.clipping_range, names=self.layer_names(model))
        return weights, result.num_examples, {"institution": self.node.institution_id}

    @staticmethod
    def layer_names(model: torch.nn.Module) -> list[str]:
        """Layer names in weight order, for error messages."""
        return list(model.state_dict().keys())

    def evaluate(
        self, parameters: Arrays, config: dict[str, bool | bytes | float | int | str]
    ) -> tuple[float, int, dict[str, bool | bytes | float | int | str]]:
        """Score the global model locally; return loss and score counts only."""
        model = build_model(len(FEATURE_COLUMNS), seed=self.settings.seed)
        set_weights(model, parameters)
        test_x, test_y = load_split(self.node.test_path, "test data")
        train_x, train_y = load_split(self.node.train_path, "training data")
        loss = evaluate_loss(model, test_x, test_y)
        test_pos, test_neg = score_histograms(predict_scores(model, test_x), test_y, SCORE_GRID_BINS)
        train_pos, train_neg = score_histograms(
            predict_scores(model, train_x), train_y, SCORE_GRID_BINS
        )
        return (
            loss,
            int(test_y.shape[0]),
            {
                "institution": self.node.institution_id,
                "test-pos": encode_counts(test_pos),
                "test-neg": encode_counts(test_neg),
                "train-pos": encode_counts(train_pos),
                "train-neg": encode_counts(train_neg),
            },
        )
