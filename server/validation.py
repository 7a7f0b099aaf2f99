"""The server's validation set: the union of the institutions' synthetic releases.

It never contains a real row. Each round the server scores it with the new
global model, chooses the operating threshold on it (cost-minimising, a
missed fraud costing ``fn-cost / fp-cost`` false alarms), and records the
validation AUC-PR to monitor the rounds. The threshold is then held fixed for
the institutions' test counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import InputError
from core.layout import ServerLayout
from fraud.features import load_arrays
from fraud.compare import ThresholdRule
from fraud.metrics import (
    SCORE_GRID_BINS,
    grid_edges,
    metrics_from_histograms,
    score_histograms,
)
from fraud.model import build_model, set_weights
from fraud.train import predict_scores

#: Threshold used when no institution released validation data (recorded as such).
DEFAULT_THRESHOLD = 0.5


#: Class weights are applied to counts in units of 1/PRIOR_RESOLUTION.
PRIOR_RESOLUTION = 1000


@dataclass(frozen=True)
class ValidationSet:
    """Synthetic, labelled rows the server may look at.

    ``row_weights`` undo an amplified fraud share: an institution that
    released, say, 20 % frauds from training data with 2 % frauds has its
    fraud rows weighted by 2/20 and its legitimate rows by 98/80, so the
    cost-minimising threshold is chosen for the real class balance.
    """

    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.float32]
    row_weights: npt.NDArray[np.float64]
    sources: tuple[str, ...]

    def choose(
        self, weights: list[npt.NDArray[np.float32]], rule: ThresholdRule
    ) -> tuple[float, float]:
        """(threshold, validation AUC-PR) for a global model (MLP weights, or a gbdt ensemble)."""
        if len(weights) == 1 and weights[0].dtype == np.uint8:
            from fraud.gbdt import Ensemble

            scores = Ensemble.from_array(weights[0]).predict(self.features)
        else:
            model = build_model(int(self.features.shape[1]), seed=0)
            set_weights(model, weights)
            scores = predict_scores(model, self.features)
        pos, neg = score_histograms(scores, self.labels, SCORE_GRID_BINS)
        w_pos, w_neg = _weighted_histograms(scores, self.labels, self.row_weights)
        threshold = float(rule.choose(w_pos, w_neg))
        return threshold, float(metrics_from_histograms(pos, neg, threshold).auc_pr)


def _weighted_histograms(
    scores: npt.NDArray[np.float64], labels: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    # The same binning as fraud.metrics.score_histograms (left-closed bins).
    bins = np.clip(
        np.searchsorted(grid_edges(SCORE_GRID_BINS), scores, side="right") - 1, 0, SCORE_GRID_BINS - 1
    )
    scaled = np.rint(weights * PRIOR_RESOLUTION)
    positive = labels > 0.5
    pos = np.bincount(bins[positive], weights=scaled[positive], minlength=SCORE_GRID_BINS)
    neg = np.bincount(bins[~positive], weights=scaled[~positive], minlength=SCORE_GRID_BINS)
    return pos.astype(np.int64), neg.astype(np.int64)


def _prior_weights(report_path: Path, labels: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    weights = np.ones(labels.shape[0], dtype=np.float64)
    if not report_path.is_file():
        return weights
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))["report"]
        real = float(report["train_fraud_share"])
        released = float(report["fraud_share"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"validation report {report_path} is unreadable: {exc}") from exc
    if 0 < released < 1 and 0 <= real < 1:
        positive = labels > 0.5
        weights[positive] = real / released
        weights[~positive] = (1 - real) / (1 - released)
    return weights


@dataclass(frozen=True)
class ByoValidation:
    """Bring-your-own releases, read; encoded once the federation agreed its scaling."""

    frames: tuple[Any, ...]
    weights: npt.NDArray[np.float64]
    sources: tuple[str, ...]
    schema: Any

    def encoded(self, spec_text: str) -> ValidationSet:
        """The validation set in the model's features (the agreed spec)."""
        from fraud.datasets import spec_from_text
        from fraud.byo_encode import encode

        spec = spec_from_text(spec_text)
        parts = [encode(frame, self.schema, spec) for frame in self.frames]
        return ValidationSet(
            np.concatenate([x for x, _ in parts]),
            np.concatenate([y for _, y in parts]),
            self.weights,
            self.sources,
        )


def read_byo_release(path: Path, schema: Any) -> Any:
    """A synthetic release of bring-your-own data, typed as the schema reads real rows.

    Raises
    ------
    InputError
        If the release lacks one of the schema's model columns or its label.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(path, keep_default_na=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"validation release {path} is unreadable: {exc}") from exc
    missing = [c for c in schema.kept_columns if c not in frame.columns]
    if missing:
        raise InputError(f"validation release {path}: missing columns {missing}")
    for column in schema.categorical:
        values = frame[column]
        frame[column] = pd.Series(
            [None if pd.isna(v) else str(v) for v in values], dtype=object, index=frame.index
        )
    for spec in schema.timestamps:
        if spec.column in frame.columns:
            frame[spec.column] = pd.to_datetime(frame[spec.column], errors="coerce")
    frame[schema.label] = pd.to_numeric(frame[schema.label], errors="raise").astype(np.int64)
    return frame.loc[:, list(schema.kept_columns)]


def load_validation(server_dir: Path, schema: Any = None) -> ValidationSet | ByoValidation | None:
    """Load ``<server-dir>/validation/*.csv``, or None when nobody released any.

    With a bring-your-own ``schema`` the releases are read as typed frames
    (:class:`ByoValidation`), to be encoded with the agreed scaling.
    """
    folder = ServerLayout(server_dir).validation_dir
    files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if not files:
        return None
    if schema is not None:
        frames = [read_byo_release(path, schema) for path in files]
        weights = [
            _prior_weights(path.with_suffix(".json"), frame[schema.label].to_numpy(np.float32))
            for path, frame in zip(files, frames, strict=True)
        ]
        return ByoValidation(tuple(frames), np.concatenate(weights), tuple(p.stem for p in files), schema)
    features, labels, weights = [], [], []
    for path in files:
        x, y = load_arrays(path, "validation release")
        features.append(x)
        labels.append(y)
        weights.append(_prior_weights(path.with_suffix(".json"), y))
    return ValidationSet(
        np.concatenate(features),
        np.concatenate(labels),
        np.concatenate(weights),
        tuple(p.stem for p in files),
    )
